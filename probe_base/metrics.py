"""Selective-classification metrics for a reliability signal, with bootstrap intervals.

Conventions: ``unreliable`` is 1 for structures whose error is above the threshold;
``risk_score`` is higher for structures the method trusts less (1 - P(reliable) for
PROBE, the member standard deviation for an ensemble). Calibration metrics (ECE, Brier)
need a probability ``p_reliable`` and are skipped for scores that are not probabilities.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

COVERAGES = (0.5, 0.8, 0.9, 0.95)


def risk_coverage(risk_score, unreliable):
    """Accept structures from most to least trusted: coverage and selective risk (rate
    of unreliable among accepted) after each acceptance."""
    order = np.argsort(risk_score, kind="stable")
    bad = np.asarray(unreliable)[order]
    accepted = np.arange(1, len(bad) + 1)
    return accepted / len(bad), np.cumsum(bad) / accepted


def aurc(risk_score, unreliable) -> float:
    """Area under the risk-coverage curve (lower is better)."""
    return float(np.mean(risk_coverage(risk_score, unreliable)[1]))


def optimal_aurc(unreliable) -> float:
    """AURC of a perfect ranking (all reliable first)."""
    return aurc(np.asarray(unreliable, dtype=float), unreliable)


def e_aurc(risk_score, unreliable) -> float:
    """Excess AURC over the perfect ranking (0 = perfect)."""
    return aurc(risk_score, unreliable) - optimal_aurc(unreliable)


def selective_risk(risk_score, unreliable, coverage) -> float:
    coverages, risks = risk_coverage(risk_score, unreliable)
    k = max(int(np.ceil(coverage * len(risks))) - 1, 0)
    return float(risks[k])


def ece(p_reliable, reliable, n_bins=15) -> float:
    """Expected calibration error of P(reliable), equal-width bins."""
    p_reliable, reliable = np.asarray(p_reliable), np.asarray(reliable)
    bins = np.minimum((p_reliable * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            total += in_bin.mean() * abs(p_reliable[in_bin].mean() - reliable[in_bin].mean())
    return float(total)


def _point_metrics(risk_score, unreliable, errors, p_reliable):
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
    point = _point_metrics(risk_score, unreliable, errors, p_reliable)
    rng = np.random.default_rng(seed)
    samples = {k: [] for k in point}
    n = len(unreliable)
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        m = _point_metrics(risk_score[idx], unreliable[idx],
                           None if errors is None else errors[idx],
                           None if p_reliable is None else np.asarray(p_reliable)[idx])
        for k, v in m.items():
            samples[k].append(v)
    result = {}
    for k, v in point.items():
        values = np.asarray(samples[k], dtype=float)
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
