"""What the probe network reads, prepared from a ``FeatureSet``: the scalar extra inputs
(energy per atom, atom count, latent distance), the normalisation moments the network
stores as buffers, and padded batches as tensors.

The moments come from in-memory features (``normalisation``) or, for a ``StoreView``
whose features stay on disk, block by block over the ranks of a torchrun job
(``streamed_normalisation``); both give the same buffers.
"""

from __future__ import annotations

import numpy as np
import torch

from probe_base.domain.neighbours import ExactNeighbors

EXTRAS = ("energy_per_atom", "log_n_atoms", "latent_distance")
N_ELEMENTS = 119  # rows of the per-element moments: atomic numbers 0..118


def pooled_features(X, mean, std) -> np.ndarray:
    """Mean over atoms of standardised features: one vector per structure."""
    z = (X.features - mean) / std
    sums = np.add.reduceat(z, X.offsets[:-1], axis=0) if len(X) else np.zeros((0, z.shape[1]))
    return sums / X.n_atoms[:, None]


class LatentNeighbours:
    """The fitting structures' pooled features, searched for each structure's k nearest
    (a density signal in the backbone's own feature space)."""

    def __init__(self, reference: np.ndarray, n_neighbors: int):
        self._index = ExactNeighbors(reference)
        self.n_neighbors = n_neighbors

    @property
    def reference(self) -> np.ndarray:
        return self._index.points

    def distance(self, pooled, exclude_self=False) -> np.ndarray:
        """Mean distance to the k nearest reference structures; ``exclude_self``: ``pooled``
        are reference structures themselves, so their zero self-distance is left out."""
        return self._index.mean_distance(pooled, self.n_neighbors, exclude_nearest=exclude_self)


def extra_inputs(X, names, latent_distance) -> np.ndarray:
    """(n, len(names)) scalar inputs of every structure of ``X``; ``latent_distance``: a
    callable giving the latent distances, called only when ``names`` asks for them."""
    columns = []
    for name in names:
        if name == "energy_per_atom":
            columns.append(X.energy_pred / X.n_atoms)
        elif name == "log_n_atoms":
            columns.append(np.log(X.n_atoms))
        elif name == "latent_distance":
            columns.append(latent_distance())
        else:
            raise ValueError(f"unknown extra input {name!r}; choose from {EXTRAS}")
    return np.stack(columns, axis=1) if columns else np.zeros((len(X), 0))


def batch_indices(indices, batch_size):
    """``indices`` in order, ``batch_size`` at a time."""
    order = np.asarray(indices)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def batch_tensors(X, extras, indices, device="cpu"):
    """Structures ``indices`` as the network's inputs: padded features, atomic numbers,
    mask and extras, as tensors on ``device``."""
    feats, z, mask = X.padded(indices)
    return tuple(torch.from_numpy(a).to(device) for a in (feats, z, mask, extras[indices].astype(np.float32)))


def normalisation(feats, zs, extras, per_element) -> dict:
    """The network's normalisation buffers from in-memory features: feature mean/std
    (per element if asked; an element seen once takes the global std), extras mean/std and
    the standardised extras' range."""
    out = {}
    if per_element:
        mean = np.zeros((N_ELEMENTS, feats.shape[1]), dtype=np.float32)
        std = np.ones((N_ELEMENTS, feats.shape[1]), dtype=np.float32)
        global_std = feats.std(0) + 1e-6
        for z in np.unique(zs):
            rows = feats[zs == z]
            mean[z] = rows.mean(0)
            std[z] = rows.std(0) + 1e-6 if len(rows) > 1 else global_std
        out["feature_mean"], out["feature_std"] = torch.from_numpy(mean), torch.from_numpy(std)
    else:
        out["feature_mean"] = torch.from_numpy(feats.mean(0).astype(np.float32))
        out["feature_std"] = torch.from_numpy((feats.std(0) + 1e-6).astype(np.float32))
    out.update(_extras_moments(extras))
    return out


def streamed_normalisation(X, extras, per_element, comm):
    """What ``fit`` computes from in-memory features (pooling mean/std and the net's
    normalisation buffers), from a ``StoreView`` read block by block: each rank sums over
    its share of the structures, the sums are added across ranks (float64).
    Returns (pool_mean, pool_std, buffers)."""
    n_features = X.n_features
    n_z = N_ELEMENTS if per_element else 1
    sums = np.zeros((3, n_z, n_features))  # count, sum, sum of squares; per element if asked
    totals = np.zeros((3, n_features))
    for feats, zs in X.blocks(comm.share(np.arange(len(X)))):
        feats = feats.astype(np.float64)
        totals += [np.full(n_features, len(feats)), feats.sum(0), (feats**2).sum(0)]
        if per_element:
            for z in np.unique(zs):
                rows = feats[zs == z]
                sums[:, z] += [np.full(n_features, len(rows)), rows.sum(0), (rows**2).sum(0)]
    totals, sums = comm.all_sum(totals), comm.all_sum(sums)

    def moments(count, total, squares):
        mean = total / np.maximum(count, 1)
        return mean, np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean**2, 0)) + 1e-6

    mean, std = moments(*totals)
    out = {}
    if per_element:
        element_mean, element_std = moments(*sums)
        counts = sums[0, :, 0]
        element_mean[counts == 0], element_std[counts == 0] = 0.0, 1.0
        element_std[counts == 1] = std
        out["feature_mean"] = torch.from_numpy(element_mean.astype(np.float32))
        out["feature_std"] = torch.from_numpy(element_std.astype(np.float32))
    else:
        out["feature_mean"] = torch.from_numpy(mean.astype(np.float32))
        out["feature_std"] = torch.from_numpy(std.astype(np.float32))
    out.update(_extras_moments(extras))
    return mean.astype(np.float32), std.astype(np.float32), out


def _extras_moments(extras) -> dict:
    """Mean, std and the (low, high) clamp bounds of the standardised extras over the
    fitting set."""
    mean = extras.mean(0).astype(np.float32)
    std = (extras.std(0) + 1e-6).astype(np.float32)
    low = (extras.min(0) - mean) / std
    high = (extras.max(0) - mean) / std
    return {
        "extras_mean": torch.from_numpy(mean),
        "extras_std": torch.from_numpy(std),
        "extras_low": torch.from_numpy(low.astype(np.float32)),
        "extras_high": torch.from_numpy(high.astype(np.float32)),
    }
