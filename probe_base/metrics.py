"""Selective-classification metrics for a reliability signal, with bootstrap intervals.

Conventions: ``unreliable`` is 1 for structures whose error is above the threshold;
``risk_score`` is higher for structures the method trusts less (1 - P(reliable) for
PROBE, the member standard deviation for an ensemble). Calibration metrics (ECE, Brier)
need a probability ``p_reliable`` and are skipped for scores that are not probabilities.

Bootstrap resamples are computed all at once: a resample is a vector of counts (how
often each structure was drawn), so every metric becomes sums over groups of tied
scores, sorted once. Point estimates come from scikit-learn / scipy; the resampled
values match them (tests/test_metrics_vectorised.py). Ties in the risk-coverage curve
(AURC, selective risk) are resolved by expectation over the order of tied structures,
so the result does not depend on how the structures happen to be stored.
"""

from __future__ import annotations

import numpy as np

COVERAGES = (0.5, 0.8, 0.9, 0.95)
N_BINS = 15
# bootstrap chunk: resamples x structures per count matrix (float64: 8 MB)
CHUNK_ELEMENTS = 1 << 20


def risk_coverage(risk_score, unreliable):
    """Accept structures from most to least trusted: coverage and selective risk (rate
    of unreliable among accepted) after each acceptance (ties in stored order; for plots)."""
    order = np.argsort(risk_score, kind="stable")
    bad = np.asarray(unreliable)[order]
    accepted = np.arange(1, len(bad) + 1)
    return accepted / len(bad), np.cumsum(bad) / accepted


def aurc(risk_score, unreliable) -> float:
    """Area under the risk-coverage curve (lower is better), tied scores in expected order."""
    return float(_Signal(risk_score, unreliable).aurc(np.ones((1, len(unreliable))))[0])


def optimal_aurc(unreliable) -> float:
    """AURC of a perfect ranking (all reliable first)."""
    unreliable = np.asarray(unreliable, dtype=float)
    return float(_Signal(unreliable, unreliable).optimal_aurc(np.ones((1, len(unreliable))))[0])


def e_aurc(risk_score, unreliable) -> float:
    """Excess AURC over the perfect ranking (0 = perfect)."""
    return aurc(risk_score, unreliable) - optimal_aurc(unreliable)


def selective_risk(risk_score, unreliable, coverage) -> float:
    """Rate of unreliable among the ``coverage`` most trusted structures."""
    ones = np.ones((1, len(unreliable)))
    return float(_Signal(risk_score, unreliable).selective_risk(ones, coverage)[0])


def ece(p_reliable, reliable, n_bins=N_BINS) -> float:
    """Expected calibration error of P(reliable), equal-width bins."""
    p_reliable = np.asarray(p_reliable, dtype=float)
    return float(_ece(np.ones((1, len(p_reliable))), p_reliable, np.asarray(reliable, dtype=float), n_bins)[0])


# ---- weighted (resampled) metrics: ``weights`` (B, n) counts of each structure ----------
def _harmonic_table(n):
    """H[k] = 1 + 1/2 + ... + 1/k for k = 0..n (positions are integer counts)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])


class _Signal:
    """A score sorted once into groups of tied values; metrics of any weighting."""

    def __init__(self, risk_score, unreliable):
        self.score = np.asarray(risk_score, dtype=float)
        self.bad = np.asarray(unreliable, dtype=float)
        self.ranks = _ranks(self.score)
        self.order, self.starts, _ = self.ranks
        self.bad_sorted = self.bad[self.order]
        self.harmonic = _harmonic_table(len(self.score))

    def group_sums(self, weights):
        """Per group of tied scores (ascending): total weight and unreliable weight (B, G)."""
        ordered = weights[:, self.order]
        total = np.add.reduceat(ordered, self.starts, axis=1)
        bad = np.add.reduceat(ordered * self.bad_sorted, self.starts, axis=1)
        return total, bad

    def auroc(self, weights, sums=None):
        """Mann-Whitney U / (P N): ties count one half (as ``roc_auc_score``)."""
        total, bad = sums or self.group_sums(weights)
        good = total - bad
        good_below = np.cumsum(good, axis=1) - good
        u = np.sum(bad * (good_below + 0.5 * good), axis=1)
        n_bad, n_good = bad.sum(1), good.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((n_bad > 0) & (n_good > 0), u / (n_bad * n_good), np.nan)

    def auprc(self, weights, sums=None):
        """Average precision, thresholds at each distinct score (``average_precision_score``)."""
        total, bad = sums or self.group_sums(weights)
        bad_desc, total_desc = bad[:, ::-1], total[:, ::-1]
        tp, flagged = np.cumsum(bad_desc, axis=1), np.cumsum(total_desc, axis=1)
        precision = np.divide(tp, flagged, out=np.zeros_like(tp), where=flagged > 0)
        n_bad, n_all = bad.sum(1), total.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = np.sum(bad_desc * precision, axis=1) / n_bad
        return np.where((n_bad > 0) & (n_bad < n_all), ap, np.nan)

    def _curve_parts(self, weights, sums=None):
        total, bad = sums or self.group_sums(weights)
        accepted_before = np.cumsum(total, axis=1) - total
        bad_before = np.cumsum(bad, axis=1) - bad
        return total, bad, accepted_before, bad_before

    def aurc(self, weights, sums=None):
        """Mean selective risk over every acceptance count. Inside a group of m tied
        structures (b unreliable), the j-th accepted adds b j / m unreliable in expectation:
        sum_j (B + b j/m) / (A + j) = B S0 + (b/m)(m - A S0), S0 = H(A + m) - H(A)."""
        total, bad, accepted_before, bad_before = self._curve_parts(weights, sums)
        harmonic = self.harmonic_up_to(weights)
        a = accepted_before.round().astype(np.int64)
        s0 = harmonic[a + total.round().astype(np.int64)] - harmonic[a]
        bad_rate = np.divide(bad, total, out=np.zeros_like(bad), where=total > 0)
        area = bad_before * s0 + bad_rate * (total - accepted_before * s0)
        return area.sum(1) / weights.sum(1)

    def harmonic_up_to(self, weights):
        n = int(round(weights.sum(1).max()))
        if len(self.harmonic) <= n:
            self.harmonic = _harmonic_table(n)
        return self.harmonic

    def optimal_aurc(self, weights):
        """AURC with every reliable structure accepted first: risk (j - R)/j after R."""
        harmonic = self.harmonic_up_to(weights)
        n = weights.sum(1)
        reliable = weights @ (1.0 - self.bad)
        r, total = reliable.round().astype(np.int64), n.round().astype(np.int64)
        return ((n - reliable) - reliable * (harmonic[total] - harmonic[r])) / n

    def selective_risk(self, weights, coverage, sums=None):
        """Expected rate of unreliable among the first ceil(coverage n) accepted."""
        total, bad, accepted_before, bad_before = self._curve_parts(weights, sums)
        n = weights.sum(1)
        k = np.maximum(np.ceil(coverage * n), 1.0)[:, None]
        # the group holding the k-th acceptance: the first whose cumulative count reaches k
        g = np.sum(accepted_before + total < k, axis=1)[:, None]
        pick = lambda a: np.take_along_axis(a, g, axis=1)[:, 0]  # noqa: E731
        m, b = pick(total), pick(bad)
        inside = k[:, 0] - pick(accepted_before)
        return (pick(bad_before) + b * inside / m) / k[:, 0]


def _ece(weights, p_reliable, reliable, n_bins=N_BINS):
    bins = np.minimum((p_reliable * n_bins).astype(int), n_bins - 1)
    gap = np.zeros((len(p_reliable), n_bins))
    gap[np.arange(len(p_reliable)), bins] = p_reliable - reliable
    return np.abs(weights @ gap).sum(1) / weights.sum(1)


def _ranks(values):
    """Sorted order and, per structure, the index of its group of tied values."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    group_of = np.empty(len(values), dtype=np.int64)
    group_of[order] = group
    return order, np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]), group_of


def _spearman(weights, score_ranks, error_ranks):
    """Pearson correlation of average ranks (with ties) in each resample, as ``spearmanr``."""
    centred = []
    centre = (weights.sum(1, keepdims=True) + 1) / 2  # the mean of ranks 1..n
    for order, starts, group_of in (score_ranks, error_ranks):
        in_group = np.add.reduceat(weights[:, order], starts, axis=1)
        rank = np.cumsum(in_group, axis=1) - in_group + (in_group + 1) / 2
        centred.append(rank[:, group_of] - centre)
    a, b = centred
    cov = np.sum(weights * a * b, axis=1)
    var = np.sum(weights * a * a, axis=1) * np.sum(weights * b * b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(var), np.nan)


def resampled_metrics(weights, risk_score, unreliable, errors=None, p_reliable=None, signal=None,
                      error_ranks=None) -> dict:
    """Every metric of each weighting (rows of ``weights``, counts per structure): the same
    names as ``evaluate_signal``, one array of length B each."""
    signal = signal or _Signal(risk_score, unreliable)
    sums = signal.group_sums(weights)
    out = {"auroc": signal.auroc(weights, sums), "auprc": signal.auprc(weights, sums),
           "aurc": signal.aurc(weights, sums)}
    out["e_aurc"] = out["aurc"] - signal.optimal_aurc(weights)
    for c in COVERAGES:
        out[f"risk@{int(c * 100)}"] = signal.selective_risk(weights, c, sums)
    if errors is not None:
        error_ranks = error_ranks or _ranks(np.asarray(errors, dtype=float))
        out["spearman"] = _spearman(weights, signal.ranks, error_ranks)
    if p_reliable is not None:
        p = np.asarray(p_reliable, dtype=float)
        reliable = 1.0 - signal.bad
        out["ece"] = _ece(weights, p, reliable)
        out["brier"] = weights @ (p - reliable) ** 2 / weights.sum(1)
    return out


def bootstrap_counts(n, n_bootstrap, seed=0, chunk=None):
    """Resample counts, ``chunk`` resamples at a time: (chunk, n) float arrays. The draws are
    those of ``rng.integers(0, n, n)`` called once per resample."""
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_bootstrap, chunk):
        rows = min(chunk, n_bootstrap - start)
        drawn = rng.integers(0, n, (rows, n)) + n * np.arange(rows)[:, None]
        yield np.bincount(drawn.ravel(), minlength=rows * n).reshape(rows, n).astype(float)


def _point_metrics(risk_score, unreliable, errors, p_reliable):
    from scipy.stats import spearmanr
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    out = {}
    both = 0 < unreliable.sum() < len(unreliable)
    out["auroc"] = float(roc_auc_score(unreliable, risk_score)) if both else np.nan
    out["auprc"] = float(average_precision_score(unreliable, risk_score)) if both else np.nan
    out["aurc"] = aurc(risk_score, unreliable)
    out["e_aurc"] = out["aurc"] - optimal_aurc(unreliable)
    for c in COVERAGES:
        out[f"risk@{int(c * 100)}"] = selective_risk(risk_score, unreliable, c)
    if errors is not None:
        out["spearman"] = float(spearmanr(risk_score, errors).statistic)
    if p_reliable is not None:
        out["ece"] = ece(p_reliable, 1 - unreliable)
        out["brier"] = float(brier_score_loss(1 - unreliable, p_reliable))
    return out


def evaluate_signal(risk_score, unreliable, errors=None, p_reliable=None,
                    n_bootstrap=1000, seed=0) -> dict:
    """Every metric with a 95 % bootstrap interval: ``{name: (value, low, high)}``."""
    risk_score = np.asarray(risk_score, dtype=float)
    unreliable = np.asarray(unreliable, dtype=int)
    errors = None if errors is None else np.asarray(errors, dtype=float)
    p_reliable = None if p_reliable is None else np.asarray(p_reliable, dtype=float)
    point = _point_metrics(risk_score, unreliable, errors, p_reliable)
    signal = _Signal(risk_score, unreliable)
    error_ranks = None if errors is None else _ranks(errors)
    samples = {k: [] for k in point}
    for weights in bootstrap_counts(len(unreliable), n_bootstrap, seed):
        for k, v in resampled_metrics(weights, risk_score, unreliable, errors, p_reliable,
                                      signal, error_ranks).items():
            samples[k].append(v)
    result = {}
    for k, v in point.items():
        values = np.concatenate(samples[k]) if samples[k] else np.zeros(0)
        values = values[np.isfinite(values)]
        low, high = (np.percentile(values, [2.5, 97.5]) if len(values) else (np.nan, np.nan))
        result[k] = (float(v), float(low), float(high))
    return result


def format_table(results: dict, metrics=("auroc", "auprc", "aurc", "e_aurc", "spearman", "ece")) -> str:
    """A fixed-width table: one row per method, ``value [low, high]`` per metric."""
    header = f"{'method':<22}" + "".join(f"{m:>22}" for m in metrics)
    lines = [header, "-" * len(header)]
    for method, table in results.items():
        cells = []
        for m in metrics:
            if m in table and np.isfinite(table[m][0]):
                v, lo, hi = table[m]
                cells.append(f"{v:.3f} [{lo:.3f},{hi:.3f}]".rjust(22))
            else:
                cells.append("-".rjust(22))
        lines.append(f"{method:<22}" + "".join(cells))
    return "\n".join(lines)
