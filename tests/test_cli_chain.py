"""extract -> fit -> evaluate -> predict through the `probe` command, on the toy adapter."""

import json

import ase.io

from probe_base.cli import main


def test_cli_chain(toy_files, tmp_path, capsys):
    models = [str(p) for p in toy_files["models"]]
    store = tmp_path / "heldout.h5"
    assert (
        main(
            [
                "--threads",
                "1",
                "extract",
                "--adapter",
                "toy",
                "--model",
                *models,
                "--input",
                str(toy_files["heldout"]),
                "--output",
                str(store),
                "--index",
                ":200",
            ]
        )
        == 0
    )
    probe = tmp_path / "toy.probe"
    assert (
        main(
            [
                "fit",
                "--store",
                str(store),
                "--output",
                str(probe),
                "--eval-fraction",
                "0.5",
                "--epochs",
                "60",
                "--target",
                "energy",
                "--quantile",
                "0.5",
                "--false-alarm",
                "0.1",
            ]
        )
        == 0
    )
    report = tmp_path / "report"
    assert (
        main(
            ["evaluate", "--probe", str(probe), "--store", str(store), "--output-dir", str(report), "--bootstrap", "50"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "PROBE" in out and "ensemble E std" in out and "latent distance" in out
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_structures"] == 100
    for plot in ("roc.png", "risk_coverage.png", "reliability_diagram.png", "error_vs_probability.png"):
        assert (report / plot).stat().st_size > 1000
    scored = tmp_path / "scored.xyz"
    assert (
        main(
            [
                "predict",
                "--adapter",
                "toy",
                "--model",
                models[0],
                "--probe",
                str(probe),
                "--input",
                str(toy_files["train"]),
                "--output",
                str(scored),
                "--index",
                ":10",
            ]
        )
        == 0
    )
    frames = ase.io.read(scored, ":")
    assert len(frames) == 10
    assert all(0 <= f.info["probe_reliability"] <= 1 for f in frames)
    assert all(abs(f.arrays["probe_importance"].sum() - 1) < 1e-4 for f in frames)


def test_cli_reports_errors_without_traceback(toy_files, tmp_path, capsys):
    code = main(
        [
            "predict",
            "--adapter",
            "toy",
            "--model",
            str(toy_files["models"][1]),
            "--probe",
            str(tmp_path / "missing.probe"),
            "--input",
            str(toy_files["train"]),
            "--output",
            str(tmp_path / "x.xyz"),
        ]
    )
    assert code == 2
    assert "missing.probe: probe file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.xyz").exists()
