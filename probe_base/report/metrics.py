"""Selective-classification metrics for a reliability signal: point values and, for the
bootstrap (``probe_base.report.bootstrap``), the same metrics under resampling weights.

Conventions: ``unreliable`` is 1 for structures whose error is above the threshold;
``risk_score`` is higher for structures the method trusts less (1 - P(reliable) for
PROBE, the member standard deviation for an ensemble). Calibration metrics (ECE, Brier)
need a probability ``p_reliable`` and are skipped for scores that are not probabilities.

A resample is a vector of counts (how often each structure was drawn), so every metric
becomes sums over groups of tied scores, sorted once, and many resamples are computed at
once. Point estimates come from scikit-learn / scipy; the resampled values match them
(tests/test_metrics_vectorised.py). Ties in the risk-coverage curve (AURC, selective
risk) are resolved by expectation over the order of tied structures, so the result does
not depend on how the structures happen to be stored.
"""

from __future__ import annotations

import numpy as np

COVERAGES = (0.5, 0.8, 0.9, 0.95)
N_BINS = 15


def risk_coverage(risk_score, unreliable):
    """Accept structures from most to least trusted: coverage and selective risk (rate
    of unreliable among accepted) after each acceptance (ties in stored order; for plots)."""
    order = np.argsort(risk_score, kind="stable")
    bad = np.asarray(unreliable)[order]
    accepted = np.arange(1, len(bad) + 1)
    return accepted / len(bad), np.cumsum(bad) / accepted


def aurc(risk_score, unreliable) -> float:
    """Area under the risk-coverage curve (lower is better), tied scores in expected order."""
    signal = _Signal(risk_score, unreliable)
    return float(signal.aurc(signal.tallies(np.ones((1, len(unreliable)))))[0])


def optimal_aurc(unreliable) -> float:
    """AURC of a perfect ranking (all reliable first)."""
    unreliable = np.asarray(unreliable, dtype=float)
    signal = _Signal(unreliable, unreliable)
    return float(signal.optimal_aurc(signal.tallies(np.ones((1, len(unreliable)))))[0])


def e_aurc(risk_score, unreliable) -> float:
    """Excess AURC over the perfect ranking (0 = perfect)."""
    return aurc(risk_score, unreliable) - optimal_aurc(unreliable)


def selective_risk(risk_score, unreliable, coverage) -> float:
    """Rate of unreliable among the ``coverage`` most trusted structures."""
    signal = _Signal(risk_score, unreliable)
    return float(signal.selective_risk(signal.tallies(np.ones((1, len(unreliable)))), coverage)[0])


def ece(p_reliable, reliable, n_bins=N_BINS) -> float:
    """Expected calibration error of P(reliable), equal-width bins."""
    p_reliable = np.asarray(p_reliable, dtype=float)
    return float(_ece(np.ones((1, len(p_reliable))), p_reliable, np.asarray(reliable, dtype=float), n_bins)[0])


# ---- weighted (resampled) metrics: ``weights`` (B, n) counts of each structure ----------
def _harmonic_table(n):
    """H[k] = 1 + 1/2 + ... + 1/k for k = 0..n (positions are integer counts)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])


class _Tallies:
    """One weighting's sums per group of tied scores (ascending), computed once and shared
    by every metric: group weight, unreliable weight, and both accumulated before it."""

    def __init__(self, signal, ordered):
        self.ordered = ordered  # (B, n) counts of each structure, in ascending score order
        bad_ordered = self.ordered * signal.bad_sorted
        if signal.tied:
            self.total = np.add.reduceat(self.ordered, signal.starts, axis=1)
            self.bad = np.add.reduceat(bad_ordered, signal.starts, axis=1)
        else:  # every group is one structure
            self.total, self.bad = self.ordered, bad_ordered
        self.accepted_through = np.cumsum(self.total, axis=1)
        self.accepted_before = self.accepted_through - self.total
        self.bad_before = np.cumsum(self.bad, axis=1) - self.bad
        self.n = self.accepted_before[:, -1] + self.total[:, -1]
        self.n_bad = self.bad_before[:, -1] + self.bad[:, -1]


class _Signal:
    """A score sorted once into groups of tied values; metrics of any weighting."""

    def __init__(self, risk_score, unreliable):
        self.score = np.asarray(risk_score, dtype=float)
        self.bad = np.asarray(unreliable, dtype=float)
        self.order, self.starts, self.group_of = _ranks(self.score)
        self.tied = len(self.starts) < len(self.score)
        self.group_sizes = np.diff(np.r_[self.starts, len(self.score)])
        self.bad_sorted = self.bad[self.order]
        self.harmonic = _harmonic_table(len(self.score))

    def tallies(self, weights) -> _Tallies:
        """``weights`` (B, n) per structure, in the order of the inputs."""
        return _Tallies(self, np.asarray(weights, dtype=float)[:, self.order])

    def auroc(self, t: _Tallies):
        """Mann-Whitney U / (P N): ties count one half (as ``roc_auc_score``)."""
        good = t.total - t.bad
        good_below = t.accepted_before - t.bad_before
        u = np.einsum("ij,ij->i", t.bad, good_below + 0.5 * good)
        n_good = t.n - t.n_bad
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((t.n_bad > 0) & (n_good > 0), u / (t.n_bad * n_good), np.nan)

    def auprc(self, t: _Tallies):
        """Average precision, thresholds at each distinct score (``average_precision_score``):
        at the threshold of group g everything from g up is flagged."""
        flagged = t.n[:, None] - t.accepted_before
        caught = t.n_bad[:, None] - t.bad_before
        precision = np.divide(caught, flagged, out=np.zeros_like(caught), where=flagged > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = np.einsum("ij,ij->i", t.bad, precision) / t.n_bad
        return np.where((t.n_bad > 0) & (t.n_bad < t.n), ap, np.nan)

    def harmonic_up_to(self, n):
        n = int(round(np.max(n)))
        if len(self.harmonic) <= n:
            self.harmonic = _harmonic_table(n)
        return self.harmonic

    def aurc(self, t: _Tallies):
        """Mean selective risk over every acceptance count. Inside a group of m tied
        structures (b unreliable), the j-th accepted adds b j / m unreliable in expectation:
        sum_j (B + b j/m) / (A + j) = B S0 + (b/m)(m - A S0), S0 = H(A + m) - H(A)."""
        harmonic = self.harmonic_up_to(t.n)
        # counts are sums of whole draws: exact integers in float64, no rounding needed
        s0 = harmonic[t.accepted_through.astype(np.int64)] - harmonic[t.accepted_before.astype(np.int64)]
        if self.tied:
            bad_rate = np.divide(t.bad, t.total, out=np.zeros_like(t.bad), where=t.total > 0)
        else:  # a group's weight is its structure's count: the rate is its label
            bad_rate = self.bad_sorted
        area = t.bad_before * s0 + bad_rate * (t.total - t.accepted_before * s0)
        return area.sum(1) / t.n

    def optimal_aurc(self, t: _Tallies):
        """AURC with every reliable structure accepted first: risk (j - R)/j after R."""
        harmonic = self.harmonic_up_to(t.n)
        reliable = t.n - t.n_bad
        r, total = reliable.round().astype(np.int64), t.n.round().astype(np.int64)
        return (t.n_bad - reliable * (harmonic[total] - harmonic[r])) / t.n

    def selective_risk(self, t: _Tallies, coverage):
        """Expected rate of unreliable among the first ceil(coverage n) accepted."""
        k = np.maximum(np.ceil(coverage * t.n), 1.0)
        # the group holding the k-th acceptance: the first whose cumulative count reaches k
        # (the running sums ascend: a binary search per resample)
        g = np.array([np.searchsorted(row, k_row) for row, k_row in zip(t.accepted_through, k)])[:, None]
        pick = lambda a: np.take_along_axis(a, g, axis=1)[:, 0]  # noqa: E731
        inside = k - pick(t.accepted_before)
        return (pick(t.bad_before) + pick(t.bad) * inside / pick(t.total)) / k

    def spearman(self, t: _Tallies, error_rank):
        """Pearson correlation of average ranks (with ties) in each resample, as
        ``spearmanr``; computed in ascending score order. ``error_rank``: the centred
        ranks of the errors per structure in input order (``centred_error_ranks``)."""
        centre = (t.n[:, None] + 1) / 2  # the mean of ranks 1..n
        score_rank = t.accepted_before + (t.total + 1) / 2 - centre
        if self.tied:
            score_rank = np.repeat(score_rank, self.group_sizes, axis=1)
        error_rank = np.take(error_rank, self.order, axis=1)
        weighted = t.ordered * score_rank
        cov = np.einsum("ij,ij->i", weighted, error_rank)
        var = np.einsum("ij,ij->i", weighted, score_rank) * np.einsum("ij,ij,ij->i", t.ordered, error_rank, error_rank)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(var > 0, cov / np.sqrt(var), np.nan)

    def calibration(self, t: _Tallies, p_reliable, n_bins=N_BINS):
        """ECE and Brier score of P(reliable) under each weighting."""
        if getattr(self, "_calibration_key", None) is not p_reliable:
            p = np.asarray(p_reliable, dtype=float)[self.order]
            gap = p - (1.0 - self.bad_sorted)
            bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
            # one column per bin and one for the squared gap: one product gives both
            columns = np.zeros((len(p), n_bins + 1))
            columns[np.arange(len(p)), bins] = gap
            columns[:, n_bins] = gap**2
            self._calibration, self._calibration_key = columns, p_reliable
        sums = t.ordered @ self._calibration
        return np.abs(sums[:, :-1]).sum(1) / t.n, sums[:, -1] / t.n


def _ece(weights, p_reliable, reliable, n_bins=N_BINS):
    bins = np.minimum((p_reliable * n_bins).astype(int), n_bins - 1)
    gap = np.zeros((len(p_reliable), n_bins))
    gap[np.arange(len(p_reliable)), bins] = p_reliable - reliable
    return np.abs(weights @ gap).sum(1) / weights.sum(1)


def _ranks(values):
    """Ascending order, the start of each group of tied values in it, and per structure the
    index of its group."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group_of = np.empty(len(values), dtype=np.int64)
    group_of[order] = np.cumsum(new_group) - 1
    return order, np.flatnonzero(new_group), group_of


def centred_error_ranks(weights, error_ranks):
    """Per resample (rows of ``weights``, counts per structure in input order), per
    structure: the average rank of its error among the drawn structures minus the mean
    rank. The same for every signal of one resample: computed once."""
    order, starts, group_of = error_ranks
    in_group = np.take(weights, order, axis=1)
    if len(starts) < len(order):
        in_group = np.add.reduceat(in_group, starts, axis=1)
    n = in_group.sum(1, keepdims=True)
    rank = np.cumsum(in_group, axis=1) - in_group + (in_group + 1) / 2 - (n + 1) / 2
    return np.take(rank, group_of, axis=1)


def resampled_metrics(weights, risk_score, unreliable, errors=None, p_reliable=None) -> dict:
    """Every metric of each weighting (rows of ``weights``, counts per structure): the same
    names as ``probe_base.report.bootstrap.evaluate_signal``, one array of length B each."""
    weights = np.asarray(weights, dtype=float)
    signal = _Signal(risk_score, unreliable)
    error_rank = None if errors is None else centred_error_ranks(weights, _ranks(np.asarray(errors, dtype=float)))
    return _metrics(signal, signal.tallies(weights), error_rank, p_reliable)


def _metrics(signal, t, error_rank, p_reliable):
    out = {"auroc": signal.auroc(t), "auprc": signal.auprc(t), "aurc": signal.aurc(t)}
    out["e_aurc"] = out["aurc"] - signal.optimal_aurc(t)
    for c in COVERAGES:
        out[f"risk@{int(c * 100)}"] = signal.selective_risk(t, c)
    if error_rank is not None:
        out["spearman"] = signal.spearman(t, error_rank)
    if p_reliable is not None:
        out["ece"], out["brier"] = signal.calibration(t, p_reliable)
    return out


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
