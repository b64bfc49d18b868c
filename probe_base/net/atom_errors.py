"""Per-atom reliability: which atoms' forces are wrong.

A small regression head on the same frozen per-atom backbone features (plus the element)
predicts each atom's force error |F_pred - F_ref| (eV/Å), supervised by the per-atom force
errors of the labelled fitting set. Its prediction is the per-atom map users get as
``atom_error``: the atom it ranks first is the one to look at. The attention map of the
structure-level probe stays available as ``atom_importance``; it is trained only on one
label per structure and does not locate wrong atoms (measured: worse than random).

Fitted with scikit-learn's ``MLPRegressor`` on log errors (errors span decades); the
weights are kept as plain arrays so the ``.probe`` file holds no pickle, and prediction
is a numpy forward pass.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

LOG_FLOOR = 1e-4  # eV/Å: below any force error that matters


class AtomErrorModel(BaseEstimator):
    """Predicted per-atom force error from per-atom features and the element."""

    def __init__(self, hidden=64, l2=1e-3, max_iter=200, max_atoms=200_000, seed=0):
        self.hidden = hidden
        self.l2 = l2  # the MLP's L2 penalty (scikit-learn's MLPRegressor alpha)
        self.max_iter = max_iter
        self.max_atoms = max_atoms
        self.seed = seed

    def _standardised(self, features):
        return (np.asarray(features, dtype=np.float32) - self.mean_) / self.std_

    def _onehot(self, atomic_numbers):
        return (np.asarray(atomic_numbers)[:, None] == self.elements_[None, :]).astype(np.float32)

    def _inputs(self, features, atomic_numbers):
        return np.concatenate([self._standardised(features), self._onehot(atomic_numbers)], axis=1)

    def fit(self, X, atom_force_error):
        from sklearn.neural_network import MLPRegressor

        errors = np.asarray(atom_force_error, dtype=np.float64)
        keep = np.flatnonzero(np.isfinite(errors))
        if len(keep) < 10:
            raise ValueError("per-atom force errors are needed to fit the per-atom map (extract with reference forces)")
        if len(keep) > self.max_atoms:
            keep = np.sort(np.random.default_rng(self.seed).choice(keep, self.max_atoms, replace=False))
        feats = np.asarray(X.features, dtype=np.float32)
        self.mean_ = feats.mean(0)
        self.std_ = feats.std(0) + 1e-6
        self.elements_ = np.unique(X.atomic_numbers).astype(np.int64)
        inputs = self._inputs(feats[keep], X.atomic_numbers[keep])
        target = np.log(errors[keep] + LOG_FLOOR)
        self.target_mean_, self.target_std_ = float(target.mean()), float(target.std() + 1e-9)
        net = MLPRegressor(
            hidden_layer_sizes=(self.hidden,),
            alpha=self.l2,
            max_iter=self.max_iter,
            early_stopping=True,
            random_state=self.seed,
            n_iter_no_change=10,
        )
        net.fit(inputs, (target - self.target_mean_) / self.target_std_)
        self.weights_ = [w.astype(np.float32) for w in net.coefs_]
        self.biases_ = [b.astype(np.float32) for b in net.intercepts_]
        return self

    def element_inputs(self, atomic_numbers) -> np.ndarray:
        """What the elements add to the first layer, per atom (n_atoms, hidden): depends only
        on the atomic numbers, so a calculator keeps it across MD steps."""
        return self._onehot(atomic_numbers) @ self.weights_[0][len(self.mean_) :] + self.biases_[0]

    def predict_atoms(self, features, atomic_numbers=None, element_inputs=None) -> np.ndarray:
        """Predicted |F_pred - F_ref| per atom, eV/Å; ``element_inputs``: of these atoms'
        ``atomic_numbers``, if already known."""
        if element_inputs is None:
            element_inputs = self.element_inputs(atomic_numbers)
        h = self._standardised(features) @ self.weights_[0][: len(self.mean_)] + element_inputs
        for w, b in zip(self.weights_[1:], self.biases_[1:]):
            h = np.maximum(h, 0.0) @ w + b  # MLPRegressor's default relu between layers
        log_error = h[:, 0] * self.target_std_ + self.target_mean_
        return np.exp(log_error) - LOG_FLOOR

    def predict(self, X) -> list[np.ndarray]:
        flat = self.predict_atoms(X.features, X.atomic_numbers)
        return [flat[X.offsets[i] : X.offsets[i + 1]] for i in range(len(X))]

    # ---- persistence ---------------------------------------------------------------------
    def state_dict(self):
        arrays = {"mean": self.mean_, "std": self.std_, "elements": self.elements_}
        for i, (w, b) in enumerate(zip(self.weights_, self.biases_)):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        meta = {
            "params": {
                "hidden": self.hidden,
                "l2": self.l2,
                "max_iter": self.max_iter,
                "max_atoms": self.max_atoms,
                "seed": self.seed,
            },
            "n_layers": len(self.weights_),
            "target_mean": self.target_mean_,
            "target_std": self.target_std_,
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays, meta):
        params = dict(meta["params"])
        if "alpha" in params:  # files before the rename: alpha was the L2 penalty
            params["l2"] = params.pop("alpha")
        model = cls(**params)
        model.mean_ = np.asarray(arrays["mean"], dtype=np.float32)
        model.std_ = np.asarray(arrays["std"], dtype=np.float32)
        model.elements_ = np.asarray(arrays["elements"], dtype=np.int64)
        model.weights_ = [np.asarray(arrays[f"w{i}"], dtype=np.float32) for i in range(meta["n_layers"])]
        model.biases_ = [np.asarray(arrays[f"b{i}"], dtype=np.float32) for i in range(meta["n_layers"])]
        model.target_mean_, model.target_std_ = float(meta["target_mean"]), float(meta["target_std"])
        return model


def atom_map_quality(maps, true_errors, offsets, top=3) -> dict:
    """How well per-atom maps locate the atoms with wrong forces, over structures:
    ``hit_rate``: the map's top atom is among the ``top`` atoms of largest true error;
    ``random_rate``: the same for a random atom (top / N averaged); ``spearman``: mean
    within-structure rank correlation of map and true errors (scipy's ``spearmanr`` per
    structure, computed for all structures at once: one call per structure cost seconds).
    Several maps of the same structures: ``AtomMapScorer`` (the true side done once)."""
    return AtomMapScorer(true_errors, offsets, top)(maps)


class AtomMapScorer:
    """``atom_map_quality`` of any number of maps against one set of true per-atom errors:
    the structures kept, the worst atoms and the ranks of the true errors, computed once."""

    def __init__(self, true_errors, offsets, top=3):
        offsets = np.asarray(offsets, dtype=np.int64)
        sizes = np.diff(offsets)
        true_all = np.asarray(true_errors, dtype=float)
        finite = np.logical_and.reduceat(np.isfinite(true_all), offsets[:-1]) if len(true_all) else np.zeros(0, bool)
        self.kept = np.flatnonzero((sizes > top) & finite)
        if len(self.kept) == 0:
            return
        self.sizes = sizes[self.kept]
        rows = np.repeat(offsets[self.kept] - np.cumsum(np.r_[0, self.sizes[:-1]]), self.sizes)
        rows += np.arange(len(rows))  # the kept structures' atoms, in order
        true = true_all[rows]
        self.seg = np.repeat(np.arange(len(self.kept)), self.sizes)
        self.starts = np.r_[0, np.cumsum(self.sizes)[:-1]]
        # the ``top`` worst atoms as np.argsort(true, kind="stable")[::-1][:top] picks them (ties: later first)
        worst_order = _segment_order(-true, self.starts, self.sizes, later_first=True)
        self.worst = np.zeros(len(rows), dtype=bool)
        self.worst[worst_order[(np.arange(len(rows)) - self.starts[self.seg[worst_order]]) < top]] = True
        self.random_rate = float(np.mean(top / self.sizes))
        self.true_varies = (np.maximum.reduceat(true, self.starts) - np.minimum.reduceat(true, self.starts)) > 0
        self.true_ranks = _segment_ranks(true, self.starts, self.sizes)

    def __call__(self, maps) -> dict:
        if len(self.kept) == 0:
            return {"hit_rate": float("nan"), "random_rate": float("nan"), "spearman": float("nan"), "n_structures": 0}
        m = np.concatenate([np.asarray(maps[i], dtype=float) for i in self.kept])
        # the map's top atom as np.argmax picks it (ties: the first)
        first_max = _segment_order(-m, self.starts, self.sizes)[self.starts]
        hits = self.worst[first_max]
        ranked = self.true_varies & ((np.maximum.reduceat(m, self.starts) - np.minimum.reduceat(m, self.starts)) > 0)
        rho = _segment_pearson(_segment_ranks(m, self.starts, self.sizes), self.true_ranks, self.starts, self.sizes)
        return {
            "hit_rate": float(np.mean(hits)),
            "random_rate": self.random_rate,
            "spearman": float(np.mean(rho[ranked])) if ranked.any() else float("nan"),
            "n_structures": len(self.kept),
        }


def _segment_order(values, starts, sizes, later_first=False):
    """Indices sorted by segment (contiguous, ascending), then value, then index (later
    first with ``later_first``): ``np.lexsort`` of those keys, computed one segment length
    at a time as a row-wise sort of a (segments, length) table (a few lengths, short rows)."""
    order = np.empty(len(values), dtype=np.int64)
    for size in np.unique(sizes):
        slots = starts[sizes == size][:, None] + np.arange(size)
        table = values[slots][:, ::-1] if later_first else values[slots]
        within = np.argsort(table, axis=1, kind="stable")
        order[slots] = np.take_along_axis(slots, size - 1 - within if later_first else within, axis=1)
    return order


def _segment_ranks(values, starts, sizes):
    """1-based ranks within each segment, ties given their average rank (scipy's rankdata)."""
    order = _segment_order(values, starts, sizes)
    seg = np.repeat(np.arange(len(sizes)), sizes)
    v, s = values[order], seg
    position = np.arange(len(values))
    segment_start = np.r_[True, s[1:] != s[:-1]]
    first = np.maximum.accumulate(np.where(segment_start, position, 0))
    rank = (position - first + 1).astype(float)
    tie_group = np.cumsum(np.r_[True, (v[1:] != v[:-1]) | (s[1:] != s[:-1])]) - 1
    average = (np.bincount(tie_group, rank) / np.bincount(tie_group))[tie_group]
    out = np.empty(len(values))
    out[order] = average
    return out


def _segment_pearson(a, b, starts, sizes):
    a = a - (np.add.reduceat(a, starts) / sizes).repeat(sizes)
    b = b - (np.add.reduceat(b, starts) / sizes).repeat(sizes)
    covariance = np.add.reduceat(a * b, starts)
    norm = np.sqrt(np.add.reduceat(a * a, starts) * np.add.reduceat(b * b, starts))
    with np.errstate(invalid="ignore", divide="ignore"):
        return covariance / norm
