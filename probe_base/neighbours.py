"""Exact Euclidean k-nearest-neighbour distances, the one search every k-NN signal uses:
the domain's per-atom novelty, the latent-distance input of the probe and the latent-distance
baseline."""

from __future__ import annotations

import numpy as np

DISTANCE_ELEMENTS = 1 << 22  # query x reference distances computed at a time (16 MB)


class ExactNeighbors:
    """Exact Euclidean k-nearest-neighbour distances by brute force on BLAS:
    |q - r|^2 = |q|^2 - 2 q.r + |r|^2, with -2 r and |r|^2 kept, so a query costs one
    matrix product, one addition and one partial sort over the reference. The neighbours of
    scikit-learn's brute ``NearestNeighbors`` without its per-call input validation, which
    cost more than the search itself for the few atoms of one MD step. Distances carry the
    float32 rounding of that expansion (absolute, ~1e-5 of |q|^2: it matters only for
    near-duplicates, whose novelty is ~0 either way)."""

    def __init__(self, points):
        points = np.ascontiguousarray(points, dtype=np.float32)
        self.minus_twice_points_t = np.ascontiguousarray(-2.0 * points.T)
        self.squared_norms = np.einsum("ij,ij->i", points, points)

    def __len__(self):
        return len(self.squared_norms)

    @property
    def points(self) -> np.ndarray:
        return np.ascontiguousarray(-0.5 * self.minus_twice_points_t.T)  # exact: powers of two

    def mean_distance(self, queries, k, exclude_nearest=False):
        """Mean distance of each query to its k nearest reference points (with
        ``exclude_nearest``, the nearest is dropped first: the query itself when the
        queries are the reference)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n_reference = len(self)
        take = min(k + int(exclude_nearest), n_reference)
        out = np.empty(len(queries))
        rows = max(1, DISTANCE_ELEMENTS // max(n_reference, 1))
        for start in range(0, len(queries), rows):
            q = queries[start : start + rows]
            partial = q @ self.minus_twice_points_t  # |q|^2 is the same along a row: added after
            partial += self.squared_norms
            if take < n_reference:
                partial = np.partition(partial, take - 1, axis=1)[:, :take]
            partial += np.einsum("ij,ij->i", q, q)[:, None]
            nearest = np.sqrt(np.maximum(partial, 0.0))
            if exclude_nearest:
                nearest = np.sort(nearest, axis=1)[:, 1:]
            out[start : start + len(q)] = nearest.mean(1)
        return out
