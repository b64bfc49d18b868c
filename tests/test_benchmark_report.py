"""The benchmark suite's verdicts and report, on hand-made result files (no backbone runs)."""

import json

from benchmarks.suite import page, readme, runner


def metrics(auroc, aurc):
    """A signal's metrics: (value, low, high) for AUROC and AURC."""
    return {"auroc": list(auroc), "aurc": list(aurc)}


def test_verdict_names_a_win_only_when_the_intervals_are_apart():
    apart = {
        "PROBE": metrics((0.9, 0.85, 0.95), (0.1, 0.08, 0.12)),
        "ensemble E std": metrics((0.7, 0.65, 0.75), (0.3, 0.25, 0.35)),
    }
    text = page.verdict(apart)
    assert "PROBE beats it on AUROC (intervals do not overlap)" in text
    assert "PROBE beats it on AURC (intervals do not overlap)" in text

    overlapping = {
        "PROBE": metrics((0.72, 0.6, 0.8), (0.28, 0.2, 0.33)),
        "ensemble E std": metrics((0.7, 0.65, 0.75), (0.3, 0.25, 0.35)),
    }
    text = page.verdict(overlapping)
    assert "ahead on AUROC but the intervals overlap" in text
    assert "beats it" not in text

    losing = {"PROBE": apart["ensemble E std"], "ensemble E std": apart["PROBE"]}
    text = page.verdict(losing)
    assert "it beats PROBE on AUROC (intervals do not overlap)" in text
    assert "it beats PROBE on AURC (intervals do not overlap)" in text


def payload(backbone, size, probe_auroc, ensemble_auroc, current=True):
    evaluation = {
        "label": {"target": "energy", "threshold": 0.1},
        "n_structures": 100,
        "unreliable_fraction": 0.5,
        "metrics": {
            "PROBE": metrics((probe_auroc, probe_auroc - 0.02, probe_auroc + 0.02), (0.2, 0.18, 0.22)),
            "ensemble E std": metrics(
                (ensemble_auroc, ensemble_auroc - 0.02, ensemble_auroc + 0.02), (0.3, 0.28, 0.32)
            ),
        },
    }
    if current:  # this protocol: its labels, and the operating point on the held-out rows
        evaluation["decisions"] = {"PROBE": {"reliable_flagged": 0.04, "unreliable_flagged": 0.3, "rule": "P < 0.7"}}
    return {
        "backbone": backbone,
        "dataset": "ethanol",
        "size": size,
        "labels": ["energy_median"] if current else ["energy_median", "energy_chemical_accuracy"],
        "models": ["a", "b"],
        "evaluations": {"energy_median / held-out": evaluation},
        "skipped": {},
        "cost": {
            "structures": 10,
            "backbone_seconds": 1.0,
            "hook_overhead_ratio": 1.0,
            "n_members": 2,
            "ensemble_ratio": 2.0,
        },
    }


def test_report_has_a_row_per_result_and_the_small_vs_large_table(tmp_path, monkeypatch):
    monkeypatch.setattr(readme, "RESULTS", tmp_path)
    (tmp_path / "toy_ethanol.json").write_text(json.dumps(payload("toy", "small", 0.61, 0.70)))
    (tmp_path / "toy_ethanol_large.json").write_text(json.dumps(payload("toy", "large", 0.83, 0.72)))
    (tmp_path / "scaling_toy.json").write_text(json.dumps([{"atoms": 9}]))  # not a suite result

    readme.report()
    text = (tmp_path / "README.md").read_text()
    rows = [line for line in text.splitlines() if "| energy_median / held-out |" in line]
    assert len(rows) == 2
    assert "| toy | ethanol | large | energy_median / held-out | 0.830" in text
    assert "vs ensemble E std: PROBE beats it on AUROC" in text  # the large row
    assert "vs ensemble E std: it beats PROBE on AUROC" in text  # the small row
    assert "| toy | ethanol | energy_median | 0.610 | 0.830 | 0.700 | 0.720 | - | - |" in text


def test_backbone_errors_come_from_the_store():
    from pathlib import Path

    import numpy as np

    from probe_base.store import StoredDataset

    data = StoredDataset(
        features=np.zeros((5, 2), np.float32),
        atomic_numbers=np.ones(5, np.int16),
        offsets=np.array([0, 2, 5]),
        energy_pred=np.array([1.0, 2.0]),
        energy_ref=np.array([1.1, 1.7]),
        force_rmse=np.array([0.03, 0.04]),
        atom_force_error=np.full(5, 0.02, np.float32),
        member_energies=np.array([[1.0, 1.2], [2.0, 1.8]]),
    )
    errors = runner.backbone_errors(data, [Path("seed1.model"), Path("seed2.model")])
    assert np.isclose(errors["seed1.model"]["energy_mae_meV"], 200.0)  # |-0.1|, |+0.3|
    assert np.isclose(errors["seed1.model"]["energy_mean_signed_error_meV"], 100.0)
    assert np.isclose(errors["seed2.model"]["energy_mae_meV"], 100.0)
    assert np.isclose(errors["seed1.model"]["force_rmse_meV_per_A"], 1000 * np.sqrt(0.00125))
    assert "force_rmse_meV_per_A" not in errors["seed2.model"]


def test_markdown_shows_backbone_errors_and_wall_time():
    result = payload("toy", "small", 0.8, 0.7)
    result["backbone_errors"] = {
        "seed1.model": {
            "energy_mae_meV": 12.34,
            "energy_mean_signed_error_meV": -5.0,
            "force_rmse_meV_per_A": 45.6,
            "atom_force_error_mean_meV_per_A": 30.01,
        },
        "seed2.model": {"energy_mae_meV": 15.0, "energy_mean_signed_error_meV": 2.0},
    }
    result["wall"] = {
        "total_seconds": 600,
        "training_seconds": 0,
        "extraction_seconds": 300,
        "fit_and_evaluation_seconds": 240,
        "cost_table_seconds": 60,
        "torch_threads": 1,
    }
    text = page.markdown(result)
    assert "| seed1.model | 12.3 | -5.0 | 45.6 | 30.0 |" in text
    assert "| seed2.model | 15.0 | +2.0 | - | - |" in text
    assert "Wall time of this run: 10.0 min (training 0.0, extraction 5.0" in text


def test_an_earlier_protocols_result_is_kept_apart_from_this_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(readme, "RESULTS", tmp_path)
    (tmp_path / "toy_ethanol.json").write_text(json.dumps(payload("toy", "small", 0.61, 0.70)))
    (tmp_path / "toy_ethanol_large.json").write_text(json.dumps(payload("toy", "large", 0.83, 0.72, current=False)))
    readme.report()
    text = (tmp_path / "README.md").read_text()
    current, earlier = text.split("## Earlier protocol")
    assert "| toy | ethanol | small | energy_median / held-out | 0.610" in current
    assert "| large |" not in current and "no small and large pair run with these labels yet" in current
    assert "| toy | ethanol | large | energy_median / held-out | 0.830" in earlier and "toy_ethanol_large" in earlier
    assert "(before the decision rule)" in earlier
