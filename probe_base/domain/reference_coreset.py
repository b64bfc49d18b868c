"""The build's subsampling, which depends only on each atom's position in the concatenated
stores: ``_priority`` (a hash of the position), ``_Reservoir`` (the samples pass 2 keeps)
and ``_coreset_rates`` (the fraction of each k-means cell a memory budget keeps).
"""

from __future__ import annotations

import numpy as np


def _priority(positions: np.ndarray, seed: int) -> np.ndarray:
    """A uniform pseudo-random number in [0, 1) per global atom position (splitmix64): the
    same atom gets the same number however the stores are split or chunked."""
    with np.errstate(over="ignore"):
        x = positions.astype(np.uint64) + np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) % (1 << 64))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class _Reservoir:
    """The ``size`` atoms of smallest priority seen so far (order-invariant)."""

    def __init__(self, size):
        self.size, self.priority, self.positions, self.features = size, np.zeros(0), np.zeros(0, np.int64), None

    def offer(self, priority, positions, features):
        if self.size == 0:
            return
        p = np.concatenate([self.priority, priority])
        pos = np.concatenate([self.positions, positions])
        f = features if self.features is None else np.concatenate([self.features, features])
        if len(p) > self.size:
            keep = np.argpartition(p, self.size - 1)[: self.size]
            p, pos, f = p[keep], pos[keep], f[keep]
        self.priority, self.positions, self.features = p, pos, f

    def sorted(self):
        """(positions, features) by position."""
        if self.features is None:
            return self.positions, None
        order = np.argsort(self.positions)
        return self.positions[order], self.features[order]


def _coreset_rates(cells_of_sample, n_cells, n_total, target) -> np.ndarray:
    """Per cell, the fraction of its atoms kept so that each cell keeps at most c atoms in
    expectation and all cells together ``target``; cell sizes estimated from the sample."""
    estimate = np.bincount(cells_of_sample, minlength=n_cells) * (n_total / max(len(cells_of_sample), 1))
    lo, hi = 0.0, float(estimate.max())
    for _ in range(60):  # bisection on c: sum(min(estimate, c)) = target
        c = 0.5 * (lo + hi)
        lo, hi = (c, hi) if np.minimum(estimate, c).sum() < target else (lo, c)
    c = 0.5 * (lo + hi)
    return np.where(estimate > 0, np.minimum(1.0, c / np.maximum(estimate, 1e-300)), 1.0)
