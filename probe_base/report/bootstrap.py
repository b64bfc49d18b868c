"""Bootstrap intervals of the selective-classification metrics: resample counts drawn in
chunks (``bootstrap_counts``), every metric of every resample at once through the weighted
metrics of ``probe_base.report.metrics``, and the 95 % percentile interval around each
point value (``evaluate_signal``, ``evaluate_signals``), tabulated by ``format_table``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import repeat

import numpy as np

from probe_base.report.metrics import _metrics, _point_metrics, _ranks, _Signal, _Tallies, centred_error_ranks

# bootstrap chunk: resamples x structures per count matrix (float64: 2 MB; larger fresh
# arrays cost more in page faults than the per-chunk Python overhead saves)
CHUNK_ELEMENTS = 1 << 18


def bootstrap_counts(n, n_bootstrap, seed=0, chunk=None, order=None):
    """Resample counts, ``chunk`` resamples at a time: (chunk, n) float arrays. The draws are
    those of ``rng.integers(0, n, n)`` called once per resample. ``order``: count column j
    is structure ``order[j]`` (counting in sorted order spares gathering columns later)."""
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, CHUNK_ELEMENTS // max(n, 1))
    column = None
    if order is not None:
        column = np.empty(n, dtype=np.int64)
        column[np.asarray(order)] = np.arange(n)
    for start in range(0, n_bootstrap, chunk):
        rows = min(chunk, n_bootstrap - start)
        drawn = rng.integers(0, n, (rows, n))
        if column is not None:
            drawn = column[drawn]
        drawn += n * np.arange(rows)[:, None]
        yield np.bincount(drawn.ravel(), minlength=rows * n).reshape(rows, n).astype(float)


def evaluate_signal(risk_score, unreliable, errors=None, p_reliable=None, n_bootstrap=1000, seed=0) -> dict:
    """Every metric with a 95 % bootstrap interval: ``{name: (value, low, high)}``."""
    p = None if p_reliable is None else {"signal": p_reliable}
    return evaluate_signals({"signal": risk_score}, unreliable, errors, p, n_bootstrap, seed)["signal"]


def evaluate_signals(
    risk_scores, unreliable, errors=None, p_reliable=None, n_bootstrap=1000, seed=0, threads=1
) -> dict:
    """``evaluate_signal`` of several risk scores of the same structures, ``{score name:
    {name: (value, low, high)}}``; ``p_reliable``: ``{score name: P(reliable)}`` for those
    that have one. The resamples are drawn once and shared: each score sees the counts
    ``evaluate_signal`` would have drawn for it (the same seed), in its own sorted order.
    ``threads``: scores resampled at once (numpy releases the GIL in its array loops)."""
    unreliable = np.asarray(unreliable, dtype=int)
    errors = None if errors is None else np.asarray(errors, dtype=float)
    error_ranks = None if errors is None else _ranks(errors)
    p_reliable = p_reliable or {}
    prepared = {}
    for name, risk_score in risk_scores.items():
        risk_score = np.asarray(risk_score, dtype=float)
        p = p_reliable.get(name)
        p = None if p is None else np.asarray(p, dtype=float)
        point = _point_metrics(risk_score, unreliable, errors, p)
        prepared[name] = (_Signal(risk_score, unreliable), p, point, {k: [] for k in point})

    def resample(item, counts, error_rank):
        signal, p, _, samples = item
        tallies = _Tallies(signal, np.take(counts, signal.order, axis=1))
        for k, v in _metrics(signal, tallies, error_rank, p).items():
            samples[k].append(v)

    workers = max(1, min(threads, len(prepared)))
    with ThreadPoolExecutor(workers) as pool:
        for counts in bootstrap_counts(len(unreliable), n_bootstrap, seed):
            error_rank = None if error_ranks is None else centred_error_ranks(counts, error_ranks)
            # each score's samples are its own: the threads share only read-only counts
            run = pool.map if workers > 1 else map
            list(run(resample, prepared.values(), repeat(counts), repeat(error_rank)))
    return {name: _intervals(point, samples) for name, (_, _, point, samples) in prepared.items()}


def _intervals(point, samples) -> dict:
    result = {}
    for k, v in point.items():
        values = np.concatenate(samples[k]) if samples[k] else np.zeros(0)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [2.5, 97.5]) if len(values) else (np.nan, np.nan)
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
