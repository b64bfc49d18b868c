"""Issue 25: one decision rule with a stated, then measured, false-alarm rate; an absolute
tolerance as the label; every method cut at the same operating point."""

import numpy as np
import pytest

from probe_base.decision import (
    DecisionError,
    DecisionRule,
    baseline_cut,
    conformal_cut,
    fit_rule,
    min_reliable_calibration,
)
from probe_base.labels import DEFAULT_TOLERANCES, LabelSpec
from probe_base.report.operating_point import decision_table, paired_differences
from probe_base.store import StoredDataset


@pytest.mark.parametrize("rate, n", [(0.05, 100), (0.1, 40), (0.02, 300)])
def test_the_conformal_cut_keeps_its_false_alarm_rate(rate, n):
    """Over many calibration draws the rate at which a new reliable structure is flagged is
    at most the stated rate, and not far below it (exact split-conformal bounds)."""
    rng = np.random.default_rng(0)
    trials = 4000
    calibration = rng.beta(5, 1.5, (trials, n))  # P(reliable) of reliable structures
    new = rng.beta(5, 1.5, trials)
    flagged = np.array([new[t] < conformal_cut(calibration[t], rate) for t in range(trials)])
    # flagged iff the new one ranks among the k smallest of the n + 1: probability k / (n + 1)
    k = int(np.floor(rate * (n + 1)))
    sd = np.sqrt(rate * (1 - rate) / trials)
    assert k / (n + 1) <= rate
    assert abs(flagged.mean() - k / (n + 1)) < 4 * sd
    # a label-free score (higher = worse) cut by the same rule flags at the same rate
    scores = -np.log(calibration)
    flagged_baseline = np.array([-np.log(new[t]) > baseline_cut(scores[t], rate) for t in range(trials)])
    assert abs(flagged_baseline.mean() - flagged.mean()) < 4 * sd


def test_too_few_reliable_calibration_structures_are_refused_with_the_fix():
    assert min_reliable_calibration(0.05) == 19
    with pytest.raises(
        DecisionError, match=r"needs at least 19 reliable calibration structures, only 10.*--false-alarm"
    ):
        conformal_cut(np.linspace(0, 1, 10), 0.05)
    with pytest.raises(DecisionError, match="must lie in"):
        conformal_cut(np.linspace(0, 1, 100), 1.5)


def test_the_rule_fails_closed_and_counts_the_domain():
    rule = DecisionRule(0.3, 0.05, "conformal", 100, 0.04)
    flags = rule.flags(np.array([0.9, 0.1, np.nan, 0.9, np.inf * 0]), np.array([True, True, True, False, True]))
    assert flags.tolist() == [False, True, True, True, True]
    # a reliable structure outside the domain is a false alarm: the cut covers what is left
    p = np.r_[np.linspace(0.2, 1.0, 95), np.full(5, 0.99)]
    inside = np.r_[np.ones(95, bool), np.zeros(5, bool)]
    fitted = fit_rule(p, inside, np.ones(100, int), 0.05)
    assert fitted.cut == 0.0  # the domain already flags 5 of 100: the network adds none
    assert fitted.calibration_flagged == pytest.approx(0.05)
    assert DecisionRule.from_info({"decision_threshold": 0.7}).method == "legacy"
    assert DecisionRule.from_info({"decision": fitted.to_dict()}) == fitted


def dataset(signed_errors):
    n = len(signed_errors)
    return StoredDataset(
        features=np.zeros((n, 1), np.float32),
        atomic_numbers=np.ones(n, np.int64),
        offsets=np.arange(n + 1),
        energy_pred=np.asarray(signed_errors, float),
        energy_ref=np.zeros(n),
    )


def test_the_default_label_is_an_absolute_tolerance_and_the_offset_is_reported():
    assert LabelSpec().threshold == DEFAULT_TOLERANCES["energy"] == 0.0434
    assert LabelSpec("force_rmse").threshold == 0.1
    rng = np.random.default_rng(0)
    shifted = dataset(-0.086 + 0.01 * rng.standard_normal(200))  # the -86 meV backbone of issue 25
    estimate = LabelSpec().offset_estimate(shifted)
    assert estimate["significant"] and estimate["removed"] and estimate["mean"] == pytest.approx(-0.086, abs=0.003)
    resolved = LabelSpec().resolved_on(shifted)
    assert resolved.offset == pytest.approx(estimate["mean"])
    assert (resolved.errors(shifted) <= resolved.threshold).mean() > 0.99  # after the offset, within 43 meV
    kept = LabelSpec(remove_offset=False).resolved_on(shifted)
    assert kept.offset == 0.0 and kept.errors(shifted).mean() > 0.08
    centred = dataset(0.01 * rng.standard_normal(200))
    assert not LabelSpec().offset_estimate(centred)["removed"]
    assert LabelSpec("force_rmse").offset_estimate(centred) is None


def test_every_method_is_cut_at_the_same_rate_on_the_same_calibration_set():
    rng = np.random.default_rng(1)
    n_cal, n = 3000, 3000
    cal_reliable = rng.random(n_cal) > 0.3
    unreliable = (rng.random(n) < 0.3).astype(int)

    # a good score and a useless one, on calibration and evaluation structures
    def good(bad):
        return rng.normal(0, 1, len(bad)) + 2.0 * bad

    cal_scores = {"LLPR": good(~cal_reliable), "GMM": rng.normal(0, 1, n_cal)}
    scores = {"LLPR": good(unreliable.astype(bool)), "GMM": rng.normal(0, 1, n), "latent distance": rng.random(n)}
    p_cal = 1 / (1 + np.exp(good(~cal_reliable)))
    rule = fit_rule(p_cal, np.ones(n_cal, bool), cal_reliable.astype(int), 0.05)
    p = 1 / (1 + np.exp(good(unreliable.astype(bool))))
    table, flags = decision_table(
        rule, p, np.ones(n, bool), {"PROBE": 1 - p, **scores}, unreliable, cal_scores, cal_reliable
    )
    assert "latent distance" not in table  # no calibration scores: not at this operating point, left out
    for name in ("PROBE", "LLPR", "GMM"):
        assert table[name]["reliable_flagged"] == pytest.approx(0.05, abs=0.02), name
    assert table["LLPR"]["unreliable_flagged"] > 0.5 > table["GMM"]["unreliable_flagged"]
    paired = paired_differences(flags, unreliable, n_bootstrap=300)
    best = paired["best single-pass baseline"]
    assert best["other"] == "LLPR"
    diff, low, high = best["detection"]
    assert low <= diff <= high and abs(diff) < 0.1  # equally good scores: level


def test_a_fitted_probe_states_its_rule_and_evaluate_measures_it(fitted_probe, heldout_store):
    from probe_base.artifact import load_probe
    from probe_base.workflow.evaluate import evaluate_probe, metrics_table

    artifact = load_probe(fitted_probe)
    rule = artifact.decision
    assert rule.method == "conformal" and rule.false_alarm == 0.05 and rule.n_calibration >= 19
    info = artifact.info["info"]
    assert set(info["calibration_indices"]) <= set(info["fit_indices"])
    evaluation = evaluate_probe(fitted_probe, heldout_store, n_bootstrap=100)
    probe = evaluation["decisions"]["PROBE"]
    # measured on held-out in-distribution structures: within the binomial spread of the stated rate
    low, high = probe["reliable_flagged_interval"]
    assert low <= 0.05 + 1e-9 or probe["reliable_flagged"] <= 0.05
    for name, row in evaluation["decisions"].items():
        assert row["false_alarm_target"] in (None, 0.05), name
    text = metrics_table(evaluation)
    assert "stated false-alarm rate <= 5%" in text and "measured on" in text


def test_paired_intervals_are_the_rate_differences_among_each_resamples_drawn_structures():
    """Each resample's difference is PROBE's rate minus the other's among the structures it
    drew (with repeats), for both classes: checked against the resampled indices themselves."""
    from probe_base.report.bootstrap import bootstrap_counts

    rng = np.random.default_rng(3)
    n = 80
    unreliable = rng.random(n) < 0.4
    flags = {"PROBE": rng.random(n) < 0.5, "GMM": rng.random(n) < 0.3}
    paired = paired_differences(flags, unreliable, n_bootstrap=40, seed=5)["best single-pass baseline"]
    expected = {"detection": [], "false_alarm": []}
    for counts in bootstrap_counts(n, 40, seed=5):
        for row in counts:
            drawn = np.repeat(np.arange(n), row.astype(int))
            for metric, mask in (("detection", unreliable[drawn]), ("false_alarm", ~unreliable[drawn])):
                a, b = flags["PROBE"][drawn][mask], flags["GMM"][drawn][mask]
                expected[metric].append(a.mean() - b.mean())
    for metric, mask in (("detection", unreliable), ("false_alarm", ~unreliable)):
        point, low, high = paired[metric]
        assert point == pytest.approx(flags["PROBE"][mask].mean() - flags["GMM"][mask].mean())
        assert (low, high) == pytest.approx(tuple(np.percentile(expected[metric], [2.5, 97.5])))
