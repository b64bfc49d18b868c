"""Risk control: a P(reliable) threshold that comes with a guarantee.

A probe accepts a prediction when P(reliable) >= threshold. The *selective risk* is the
rate of unreliable predictions among the accepted ones, the *coverage* the fraction
accepted. From a labelled calibration set (structures the probe was not fitted on) two
methods choose the threshold:

``sgr``  Selection with Guaranteed Risk (Geifman & El-Yaniv, NeurIPS 2017). A binary
         search over the calibration structures sorted by P(reliable); at each of its
         ``k = ceil(log2(m + 1))`` steps the one-sided Clopper-Pearson (binomial tail)
         upper bound of the selective risk is computed at confidence ``1 - delta / k``
         (union bound over the tested thresholds). The threshold kept is the one of
         largest coverage whose bound is below ``target_risk``, so that
         ``P(selective risk > target_risk) <= delta`` over draws of the calibration set.
         When no threshold qualifies (too few calibration structures, or a target below
         what the probe can reach) every prediction is rejected (coverage 0).

``crc``  Conformal risk control (Angelopoulos et al., ICLR 2024) for the per-structure
         loss ``1[accepted and unreliable]``: the smallest threshold with
         ``(n * empirical_loss + 1) / (n + 1) <= target_risk``. It guarantees in
         expectation over calibration set and new structure,
         ``P(accepted and unreliable) <= target_risk``: the rate of accepted-but-unreliable
         predictions among *all* predictions (selective risk times coverage). It is an
         expectation guarantee; ``delta`` plays no part.

This module is the methods alone, on arrays of probabilities and labels.
``probe_base.workflow.calibrate`` runs one of them on a feature store, writes the threshold
into the ``.probe`` file and measures the realised risk on held-out structures.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta

from probe_base.errors import InputError

METHODS = ("sgr", "crc")
#: threshold that rejects every prediction (P(reliable) <= 1 always)
REJECT_ALL = float(np.nextafter(1.0, 2.0))


@dataclass
class RiskControl:
    """A chosen threshold and what was measured on the calibration set."""

    method: str
    target_risk: float
    delta: float | None  # None for crc (an expectation guarantee)
    threshold: float
    coverage: float  # fraction of calibration structures accepted
    risk: float | None  # selective risk among them (None when none accepted)
    risk_bound: float | None  # sgr: the (1 - delta) upper bound of the selective risk
    n_calibration: int
    n_accepted: int
    achievable: bool  # False: no threshold met the target, everything is rejected

    def to_dict(self) -> dict:
        return asdict(self)


# ---- the two methods ------------------------------------------------------------------
def binomial_upper_bound(n_errors: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson bound: the rate b with P(Binomial(n, b) <= n_errors) = delta,
    SGR's B*(r, delta, S). With probability >= 1 - delta the true rate is below it."""
    if n <= 0 or n_errors >= n:
        return 1.0
    return float(beta.ppf(1.0 - delta, n_errors + 1, n - n_errors))


def binomial_interval(n_errors: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a binomial rate."""
    if n <= 0:
        return (0.0, 1.0)
    tail = (1.0 - level) / 2
    low = 0.0 if n_errors == 0 else float(beta.ppf(tail, n_errors, n - n_errors + 1))
    high = 1.0 if n_errors == n else float(beta.ppf(1 - tail, n_errors + 1, n - n_errors))
    return low, high


def _check(p_reliable, reliable, target_risk, delta):
    p = np.asarray(p_reliable, dtype=np.float64).reshape(-1)
    y = np.asarray(reliable).reshape(-1)
    if len(p) != len(y):
        raise InputError(f"{len(p)} probabilities but {len(y)} labels")
    if not len(p):
        raise InputError("the calibration set is empty")
    if not np.all(np.isfinite(p)):
        raise InputError("P(reliable) has NaN or infinite values")
    if not set(np.unique(y)) <= {0, 1}:
        raise InputError("labels must be 1 (reliable) or 0 (unreliable)")
    if not 0 < target_risk < 1:
        raise InputError(f"target risk must lie in (0, 1), got {target_risk}")
    if delta is not None and not 0 < delta < 1:
        raise InputError(f"delta must lie in (0, 1), got {delta}")
    order = np.argsort(-p, kind="stable")  # most trusted first
    return p[order], (1 - y[order]).astype(np.int64)


def _accepted_count(p_sorted, n_top):
    """Structures accepted by the threshold p_sorted[n_top - 1] (ties included)."""
    if n_top <= 0:
        return 0
    return int(np.searchsorted(-p_sorted, -p_sorted[n_top - 1], side="right"))


def sgr_threshold(p_reliable, reliable, target_risk: float, delta: float) -> RiskControl:
    """SGR (Geifman & El-Yaniv 2017, Algorithm 1) on calibration probabilities and labels
    (1 = reliable). See the module docstring for the guarantee."""
    p_sorted, bad = _check(p_reliable, reliable, target_risk, delta)
    m = len(p_sorted)
    cum_bad = np.cumsum(bad)
    n_tests = max(1, math.ceil(math.log2(m + 1)))  # the most tests the search can make
    delta_each = delta / n_tests
    best = (0, 0, 1.0)  # (n accepted, errors, bound): accept none
    low, high = 0, m + 1  # accepting `low` most trusted passes; `high` fails (sentinel)
    while high - low > 1:
        mid = (low + high + 1) // 2
        n_acc = _accepted_count(p_sorted, mid)
        errors = int(cum_bad[n_acc - 1])
        bound = binomial_upper_bound(errors, n_acc, delta_each)
        if bound < target_risk:
            if n_acc > best[0]:
                best = (n_acc, errors, bound)
            low = max(mid, min(n_acc, high - 1))
        else:
            high = mid
    n_acc, errors, bound = best
    if n_acc == 0:
        return RiskControl("sgr", float(target_risk), float(delta), REJECT_ALL, 0.0, None, None, m, 0, False)
    return RiskControl(
        "sgr",
        float(target_risk),
        float(delta),
        float(p_sorted[n_acc - 1]),
        n_acc / m,
        errors / n_acc,
        bound,
        m,
        n_acc,
        True,
    )


def crc_threshold(p_reliable, reliable, target_risk: float) -> RiskControl:
    """Conformal risk control of the loss 1[accepted and unreliable] (bound B = 1)."""
    p_sorted, bad = _check(p_reliable, reliable, target_risk, None)
    n = len(p_sorted)
    cum_bad = np.cumsum(bad)
    n_acc = 0
    if 1.0 / (n + 1) <= target_risk:
        # the loss only grows as the threshold falls: accept down to the last
        # position whose corrected empirical loss still meets the target
        ok = (cum_bad + 1.0) / (n + 1) <= target_risk
        # a threshold accepts whole groups of tied probabilities: only group ends count
        group_end = np.r_[p_sorted[1:] != p_sorted[:-1], True]
        feasible = np.flatnonzero(ok & group_end)
        # ok is monotone (non-increasing), so the largest feasible position is the answer
        n_acc = int(feasible[-1]) + 1 if len(feasible) else 0
    if n_acc == 0:
        return RiskControl("crc", float(target_risk), None, REJECT_ALL, 0.0, None, None, n, 0, False)
    errors = int(cum_bad[n_acc - 1])
    return RiskControl(
        "crc", float(target_risk), None, float(p_sorted[n_acc - 1]), n_acc / n, errors / n_acc, None, n, n_acc, True
    )


def choose_threshold(p_reliable, reliable, target_risk: float, delta: float = 0.05, method: str = "sgr") -> RiskControl:
    """The threshold of ``method`` (``sgr`` or ``crc``) for these calibration data."""
    if method == "sgr":
        return sgr_threshold(p_reliable, reliable, target_risk, delta)
    if method == "crc":
        return crc_threshold(p_reliable, reliable, target_risk)
    raise InputError(f"unknown risk-control method {method!r}; choose one of {', '.join(METHODS)}")


def min_calibration_size(target_risk: float, delta: float) -> int:
    """Smallest calibration set on which SGR can accept anything (all accepted reliable)."""
    n, tests = 1, 1
    while True:
        tests = max(1, math.ceil(math.log2(n + 1)))
        if binomial_upper_bound(0, n, delta / tests) < target_risk:
            return n
        n += 1
