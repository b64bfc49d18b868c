"""The vectorised bootstrap metrics against scikit-learn / scipy, resample by resample."""

import itertools

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from probe_base.report import bootstrap, metrics
from probe_base.report.bootstrap import bootstrap_counts, evaluate_signal
from probe_base.report.metrics import aurc, resampled_metrics, risk_coverage, selective_risk


def _tied_inputs(n, seed):
    """Scores, errors and probabilities on coarse grids: many ties, also across classes."""
    rng = np.random.default_rng(seed)
    unreliable = rng.integers(0, 2, n)
    score = np.round(unreliable + rng.normal(0, 1.0, n), 1)
    errors = np.round(np.abs(score + rng.normal(0, 0.5, n)), 1)
    p_reliable = np.round(1 / (1 + np.exp(score)), 1)
    return score, unreliable, errors, p_reliable


def _ece_loop(p, reliable, n_bins=15):
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    return sum(
        np.mean(bins == b) * abs(p[bins == b].mean() - reliable[bins == b].mean())
        for b in range(n_bins)
        if np.any(bins == b)
    )


def _expected_curve_by_enumeration(score, bad):
    """AURC and risk at each acceptance count averaged over every order of tied scores."""
    values = np.unique(score)
    groups = [np.flatnonzero(score == v) for v in values]
    curves = []
    for orders in itertools.product(*(itertools.permutations(g) for g in groups)):
        accepted = bad[np.concatenate(orders)]
        curves.append(np.cumsum(accepted) / np.arange(1, len(bad) + 1))
    curve = np.mean(curves, axis=0)
    return curve.mean(), curve


@pytest.mark.parametrize("n,seed", [(12, 0), (60, 1), (400, 2)])
def test_every_resample_matches_sklearn_and_scipy(n, seed):
    score, bad, errors, p = _tied_inputs(n, seed)
    rng = np.random.default_rng(seed + 10)
    indices = rng.integers(0, n, (40, n))
    weights = np.stack([np.bincount(idx, minlength=n) for idx in indices]).astype(float)
    got = resampled_metrics(weights, score, bad, errors, p)
    for row, idx in enumerate(indices):
        s, b, e, q = score[idx], bad[idx], errors[idx], p[idx]
        if 0 < b.sum() < n:
            assert got["auroc"][row] == pytest.approx(roc_auc_score(b, s), abs=1e-12)
            assert got["auprc"][row] == pytest.approx(average_precision_score(b, s), abs=1e-12)
        else:
            assert np.isnan(got["auroc"][row]) and np.isnan(got["auprc"][row])
        assert got["spearman"][row] == pytest.approx(spearmanr(s, e).statistic, abs=1e-10)
        assert got["brier"][row] == pytest.approx(brier_score_loss(1 - b, q), abs=1e-12)
        assert got["ece"][row] == pytest.approx(_ece_loop(q, 1 - b), abs=1e-12)
        # AURC of the resample; each tied group in expected order equals the same resample
        # scored by the point function (itself checked against enumeration below)
        assert got["aurc"][row] == pytest.approx(aurc(s, b), abs=1e-12)
        assert got["risk@90"][row] == pytest.approx(selective_risk(s, b, 0.9), abs=1e-12)
        perfect = np.mean(risk_coverage(b.astype(float), b)[1])
        assert got["e_aurc"][row] == pytest.approx(aurc(s, b) - perfect, abs=1e-12)


def test_risk_coverage_metrics_without_ties_match_the_accept_in_order_curve():
    rng = np.random.default_rng(3)
    score, bad = rng.normal(size=500), rng.integers(0, 2, 500)
    coverage, risk = risk_coverage(score, bad)
    assert aurc(score, bad) == pytest.approx(risk.mean(), abs=1e-12)
    for c in metrics.COVERAGES:
        assert selective_risk(score, bad, c) == pytest.approx(risk[int(np.ceil(c * 500)) - 1], abs=1e-12)


def test_tied_risk_coverage_is_the_expectation_over_orders_of_tied_structures():
    score = np.array([0.1, 0.1, 0.1, 0.5, 0.5, 0.2, 0.9, 0.5])
    bad = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    expected_aurc, curve = _expected_curve_by_enumeration(score, bad)
    assert aurc(score, bad) == pytest.approx(expected_aurc, abs=1e-12)
    for c in (0.25, 0.5, 0.6, 0.9):
        k = max(int(np.ceil(c * len(bad))), 1)
        assert selective_risk(score, bad, c) == pytest.approx(curve[k - 1], abs=1e-12)
    # stored order no longer matters
    flipped = np.arange(len(bad))[::-1]
    assert aurc(score[flipped], bad[flipped]) == pytest.approx(expected_aurc, abs=1e-12)


def test_bootstrap_counts_are_the_per_resample_draws_in_bounded_chunks():
    n, resamples = 37, 23
    rng = np.random.default_rng(5)
    expected = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)])
    chunks = list(bootstrap_counts(n, resamples, seed=5, chunk=4))
    assert [len(c) for c in chunks] == [4, 4, 4, 4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(chunks), expected)
    order = np.random.default_rng(1).permutation(n)
    in_order = np.concatenate(list(bootstrap_counts(n, resamples, seed=5, chunk=4, order=order)))
    np.testing.assert_array_equal(in_order, expected[:, order])


def test_evaluate_signal_intervals_are_percentiles_of_sklearn_on_each_resample(monkeypatch):
    score, bad, errors, p = _tied_inputs(150, 7)
    monkeypatch.setattr(bootstrap, "CHUNK_ELEMENTS", 150 * 3)  # several chunks
    result = evaluate_signal(score, bad, errors, p, n_bootstrap=60, seed=4)
    rng = np.random.default_rng(4)
    auroc, ap, rho, area, brier, calibration = [], [], [], [], [], []
    for _ in range(60):
        idx = rng.integers(0, 150, 150)
        auroc.append(roc_auc_score(bad[idx], score[idx]))
        ap.append(average_precision_score(bad[idx], score[idx]))
        rho.append(spearmanr(score[idx], errors[idx]).statistic)
        area.append(aurc(score[idx], bad[idx]))
        brier.append(brier_score_loss(1 - bad[idx], p[idx]))
        calibration.append(_ece_loop(p[idx], 1 - bad[idx]))
    for name, values, point in (
        ("auroc", auroc, roc_auc_score(bad, score)),
        ("auprc", ap, average_precision_score(bad, score)),
        ("spearman", rho, spearmanr(score, errors).statistic),
        ("aurc", area, aurc(score, bad)),
        ("brier", brier, brier_score_loss(1 - bad, p)),
        ("ece", calibration, _ece_loop(p, 1 - bad)),
    ):
        value, low, high = result[name]
        assert value == pytest.approx(point)
        np.testing.assert_allclose([low, high], np.percentile(values, [2.5, 97.5]), atol=1e-10)
    assert set(result) == {
        "auroc",
        "auprc",
        "aurc",
        "e_aurc",
        "risk@50",
        "risk@80",
        "risk@90",
        "risk@95",
        "spearman",
        "ece",
        "brier",
    }


def test_single_class_resamples_are_left_out_of_the_interval():
    bad = np.array([1] + [0] * 9)
    score = np.arange(10.0)
    result = evaluate_signal(score, bad, n_bootstrap=200, seed=0)
    assert result["auroc"][0] == pytest.approx(roc_auc_score(bad, score))
    assert np.isfinite(result["auroc"][1]) and result["auroc"][1] <= result["auroc"][2]


def test_several_signals_share_resamples_and_match_one_at_a_time():
    from probe_base.report.bootstrap import evaluate_signals

    rng = np.random.default_rng(3)
    n = 300
    errors = rng.lognormal(size=n)
    bad = (errors > 1.2).astype(int)
    p = 1 / (1 + np.exp(errors - 1.2 + rng.normal(0, 0.5, n)))
    scores = {"probability": 1 - p, "noisy": errors + rng.normal(0, 1, n), "tied": np.round(errors, 1)}
    together = evaluate_signals(scores, bad, errors, {"probability": p}, n_bootstrap=300, seed=4)
    assert list(together) == list(scores)
    for name, score in scores.items():
        prob = p if name == "probability" else None
        # each score's own resamples: the per-resample draws of that seed, in input order
        resampled = [resampled_metrics(c, score, bad, errors, prob) for c in bootstrap_counts(n, 300, seed=4, chunk=70)]
        assert set(together[name]) == set(resampled[0])
        for metric, (_, low, high) in together[name].items():
            values = np.concatenate([r[metric] for r in resampled])
            assert [low, high] == pytest.approx(np.percentile(values[np.isfinite(values)], [2.5, 97.5]), abs=1e-12)
        assert together[name] == evaluate_signal(score, bad, errors, prob, n_bootstrap=300, seed=4)
    assert "ece" in together["probability"] and "ece" not in together["noisy"]
    # scores resampled on two threads at once: the same numbers
    assert evaluate_signals(scores, bad, errors, {"probability": p}, n_bootstrap=300, seed=4, threads=2) == together
