"""Risk control (probe_base.selective): the guarantee, checked empirically over many random
calibration sets drawn from a population whose true selective risk is known in closed
form, and the calibrate -> evaluate -> attach chain on the toy backbone
(probe_base.workflow.calibrate)."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch

from probe_base.selective import (
    REJECT_ALL,
    binomial_upper_bound,
    choose_threshold,
    crc_threshold,
    min_calibration_size,
    sgr_threshold,
)

torch.set_num_threads(1)

try:
    import practice_toy  # the tiny trained backbone + probe shared by the practice tests
except ImportError:  # tests/ imported as a package
    from tests import practice_toy

# Population: score s ~ U(0, 1) = P(reliable) of the probe; P(unreliable | s) = A (1 - s)^B.
# Accepting s >= t: selective risk A (1 - t)^B / (B + 1), coverage 1 - t,
# rate of accepted-and-unreliable among all A (1 - t)^(B + 1) / (B + 1).
A, B = 0.6, 2.0
N_SPLITS = 300
N_CALIBRATION = 1000


def true_selective_risk(t):
    return A * (1 - t) ** B / (B + 1)


def true_joint_risk(t):
    return A * (1 - t) ** (B + 1) / (B + 1)


def oracle_coverage(alpha):
    return (alpha * (B + 1) / A) ** (1 / B)


def draw(rng, n, flat_risk=None):
    s = rng.random(n)
    p_bad = np.full(n, flat_risk) if flat_risk is not None else A * (1 - s) ** B
    unreliable = rng.random(n) < p_bad
    return s, (~unreliable).astype(int)


def allowed_violations(delta, n_splits):
    """delta plus three binomial standard errors (sampling error of the violation rate)."""
    return delta + 3 * np.sqrt(delta * (1 - delta) / n_splits)


def test_binomial_bound_is_clopper_pearson():
    # no errors: the bound solves (1 - b)^n = delta
    for n, delta in [(10, 0.05), (200, 0.01)]:
        assert binomial_upper_bound(0, n, delta) == pytest.approx(1 - delta ** (1 / n), rel=1e-9)
    assert binomial_upper_bound(5, 5, 0.1) == 1.0 and binomial_upper_bound(0, 0, 0.1) == 1.0
    # coverage of the bound at a fixed n: miscoverage <= delta
    rng = np.random.default_rng(1)
    k = rng.binomial(100, 0.2, size=4000)
    miss = np.mean([binomial_upper_bound(int(x), 100, 0.1) < 0.2 for x in k])
    assert miss <= 0.1 + 3 * np.sqrt(0.09 / 4000)


@pytest.mark.parametrize("alpha,delta,n", [(0.1, 0.1, N_CALIBRATION), (0.05, 0.05, 3 * N_CALIBRATION)])
def test_sgr_guarantee_over_random_splits(alpha, delta, n):
    rng = np.random.default_rng(0)
    violations, coverages = [], []
    for _ in range(N_SPLITS):
        s, reliable = draw(rng, n)
        control = sgr_threshold(s, reliable, alpha, delta)
        true_risk = true_selective_risk(control.threshold) if control.achievable else 0.0
        violations.append(true_risk > alpha)
        coverages.append(1 - control.threshold if control.achievable else 0.0)
    rate = np.mean(violations)
    assert rate <= allowed_violations(delta, N_SPLITS), f"violation rate {rate} > delta {delta}"
    # not trivially 0: the oracle (true risk known) reaches 71 % / 50 % coverage; SGR,
    # paying for finite samples and the union bound, gets ~60 % / ~41 %
    coverages = np.array(coverages)
    assert np.mean(coverages > 0) >= 0.99
    assert np.mean(coverages) >= 0.75 * oracle_coverage(alpha)


def test_sgr_worst_case_flat_risk_and_the_test_can_see_violations():
    """Every threshold has true risk 0.105 > alpha = 0.1: any acceptance is a violation,
    so the union bound over the binary search's tests is what keeps the rate <= delta.
    A naive rule (largest coverage whose *empirical* risk <= alpha) fails most of the time,
    which shows these splits can detect a method without the guarantee."""
    rng = np.random.default_rng(2)
    alpha, delta = 0.1, 0.1
    sgr_violations, naive_violations = [], []
    for _ in range(N_SPLITS):
        s, reliable = draw(rng, N_CALIBRATION, flat_risk=0.105)
        sgr_violations.append(sgr_threshold(s, reliable, alpha, delta).achievable)
        bad = 1 - reliable[np.argsort(-s)]
        empirical = np.cumsum(bad) / np.arange(1, len(bad) + 1)
        naive_violations.append(bool(np.any(empirical <= alpha)))
    assert np.mean(sgr_violations) <= allowed_violations(delta, N_SPLITS)
    assert np.mean(naive_violations) > 0.5


def test_crc_controls_expected_accepted_unreliable_rate():
    rng = np.random.default_rng(3)
    alpha = 0.1
    losses, coverages = [], []
    for _ in range(N_SPLITS):
        s, reliable = draw(rng, N_CALIBRATION)
        control = crc_threshold(s, reliable, alpha)
        losses.append(true_joint_risk(control.threshold) if control.achievable else 0.0)
        coverages.append(control.coverage)
        assert control.delta is None
    losses = np.array(losses)
    assert losses.mean() <= alpha + 3 * losses.std() / np.sqrt(N_SPLITS)
    assert losses.mean() >= alpha - 0.02  # tight, as CRC promises (>= alpha - 2/(n+1))
    assert np.mean(coverages) > 0.5


def test_unachievable_targets_reject_everything():
    rng = np.random.default_rng(4)
    s, reliable = draw(rng, 30)
    reliable[:] = 1  # even a perfect calibration set of 30 cannot certify 10 % at delta 0.05
    assert 30 < min_calibration_size(0.1, 0.05)
    control = sgr_threshold(s, reliable, 0.1, 0.05)
    assert not control.achievable and control.threshold == REJECT_ALL and control.coverage == 0
    assert not np.any(s >= control.threshold)
    # risk below what the population has anywhere
    s, reliable = draw(rng, 2000, flat_risk=0.3)
    assert not sgr_threshold(s, reliable, 0.1, 0.05).achievable
    assert choose_threshold(s, reliable, 0.9, 0.05).coverage == 1.0  # any target above 0.3: all


def test_ties_accept_whole_groups():
    # isotonic calibration produces ties: a threshold accepts all or none of a group
    p = np.repeat([0.95, 0.9, 0.6, 0.2], 250)
    reliable = np.concatenate(
        [np.ones(250), np.r_[np.ones(240), np.zeros(10)], np.r_[np.ones(150), np.zeros(100)], np.zeros(250)]
    ).astype(int)
    for method in ("sgr", "crc"):
        control = choose_threshold(p, reliable, 0.1, 0.05, method)
        assert control.n_accepted == int(np.sum(p >= control.threshold))
        assert control.n_accepted % 250 == 0
    assert sgr_threshold(p, reliable, 0.1, 0.05).n_accepted == 500


def test_invalid_arguments():
    from probe_base.errors import InputError

    with pytest.raises(InputError):
        sgr_threshold([0.5, 0.6], [1, 0], 1.5, 0.1)
    with pytest.raises(InputError):
        sgr_threshold([0.5, 0.6], [1], 0.1, 0.1)
    with pytest.raises(InputError):
        choose_threshold([0.5], [1], 0.1, 0.1, method="bogus")


# ---- the chain on real probe outputs ----------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A feature store of the toy backbone and a probe fitted on part of it."""
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.store import extract
    from probe_base.workflow.fit import fit_probe

    toy = practice_toy.toy_probe()
    folder = tmp_path_factory.mktemp("selective")
    structures = folder / "heldout.xyz"
    ase.io.write(structures, toy["probe_set"])
    store = extract(toy["adapter"], structures, folder / "heldout.h5", with_forces=True)
    probe = folder / "toy.probe"
    classifier = ProbeClassifier(hidden=16, heads=2, lr=1e-3, max_epochs=25, patience=8, seed=0)  # 5-fold
    fit_probe(store, probe, LabelSpec("energy", None, 0.5), classifier, eval_fraction=0.6, false_alarm=0.1)
    return {"store": store, "probe": probe, "folder": folder, "toy": toy}


def test_calibrate_evaluate_attach(fitted, capsys):
    from probe_base.artifact import load_probe
    from probe_base.cli import main
    from probe_base.integrations.calculator import attach
    from probe_base.toy import ToyCalculator

    before = load_probe(fitted["probe"])
    out = fitted["folder"] / "calibrated.probe"
    assert (
        main(
            [
                "calibrate",
                "--probe",
                str(fitted["probe"]),
                "--store",
                str(fitted["store"]),
                "--target-risk",
                "0.35",
                "--delta",
                "0.2",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    # 60 calibration structures: a 0.3 target sits at the edge of what SGR can certify
    # (Clopper-Pearson bound 0.287 for 4 errors in 31, so one label flip decides it)
    assert "guarantee: selective risk <= 0.35" in printed
    after = load_probe(out)
    record = after.info["info"]["selective"]
    assert record["method"] == "sgr" and record["target_risk"] == 0.35 and record["delta"] == 0.2
    assert after.info["info"]["decision_threshold"] == record["threshold"]
    # calibrated on half of the held-out part of the fitting store: 60 of its 120
    eval_indices = before.info["info"]["eval_indices"]
    assert record["n_calibration"] == len(eval_indices) // 2
    assert set(record["calibration_source_index"]) <= set(eval_indices)
    assert record["achievable"] and record["coverage"] > 0, record
    # everything else kept as it was
    for key in ("fit_indices", "eval_indices", "fit_store", "store_identity", "n_fit"):
        assert after.info["info"][key] == before.info["info"][key]
    assert after.info["versions"] == before.info["versions"]
    for a, b in zip(before.classifier.members_, after.classifier.members_):
        assert all(torch.equal(a[k], b[k]) for k in a)

    # evaluate: realised risk and coverage on the held-out structures not used to calibrate
    report = fitted["folder"] / "report"
    assert (
        main(
            [
                "evaluate",
                "--probe",
                str(out),
                "--store",
                str(fitted["store"]),
                "--output-dir",
                str(report),
                "--bootstrap",
                "5",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "risk control (sgr)" in printed and "held out (60 structures, 60 calibration" in printed
    summary = json.loads((report / "metrics.json").read_text())["selective"]
    assert summary["n_structures"] == 60 and summary["n_left_out_calibration"] == 60
    assert summary["threshold"] == record["threshold"]
    assert 0 <= summary["coverage"] <= 1
    if summary["n_accepted"]:
        low, high = summary["risk_interval"]
        assert low <= summary["risk"] <= high

    # attach uses the calibrated threshold
    calc = attach(ToyCalculator(fitted["toy"]["model"]), out, policy="ignore")
    assert calc.threshold == record["threshold"]


def test_calibrate_crc_in_place_and_other_store(fitted, tmp_path):
    """Calibrating on a store the probe was not fitted on uses all of it; --output omitted
    rewrites the probe file itself."""
    import shutil

    from probe_base import toy as toy_module
    from probe_base.artifact import load_probe
    from probe_base.store import extract, load_store
    from probe_base.workflow.calibrate import calibrate_probe, selective_evaluation

    probe = tmp_path / "copy.probe"
    shutil.copy(fitted["probe"], probe)
    other = toy_module.emt_clusters(60, seed=7, rattle=(0.02, 0.25), vacancy_fraction=0.3)
    ase.io.write(tmp_path / "other.xyz", other)
    store = extract(fitted["toy"]["adapter"], tmp_path / "other.xyz", tmp_path / "other.h5")
    control = calibrate_probe(probe, store, 0.4, method="crc")
    assert control.n_calibration == 60 and control.method == "crc"
    artifact = load_probe(probe)
    assert artifact.info["info"]["decision_threshold"] == control.threshold
    # evaluated on that same store: every structure was used to calibrate, none left
    data = load_store(store)
    p = artifact.classifier.predict_proba(data)[:, 1]
    summary = selective_evaluation(artifact, data, p, np.zeros(len(data), dtype=int))
    assert summary["n_structures"] == 0 and summary["n_left_out_calibration"] == 60
