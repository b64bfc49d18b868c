"""The state of a reference build between its passes (``_Build``: what pass 3 needs and
fills) and its checkpoint file: safetensors + JSON, written atomically, never unpickled,
refused when it belongs to another source or other options.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from probe_base.domain.index_params import ExactTruth, ReferenceError, _faiss
from probe_base.domain.reference_coreset import _priority
from probe_base.domain.reference_index import ElementIndex

CHECKPOINT_SECONDS = 60.0  # pass 3 saves at most this often (a 10^7-atom build's pass 3 takes minutes)
CHECKPOINT_FORMAT = "mlip-probe-reference-build/1"
CHECKPOINT_KEY = "mlip_probe_reference_build"


class _Build:
    """What pass 3 needs and fills: written to the checkpoint, read back to resume."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def standardise(self, x):
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def kept(self, z, x, positions):
        """Which of the element's atoms the budget's coreset keeps (all without one)."""
        if z not in self.thinned:
            return np.ones(len(x), dtype=bool)
        if z in self.centroids:  # an exact element thinned: cells of a k-means on its sample
            cells = _faiss().knn(np.ascontiguousarray(x, dtype=np.float32), self.centroids[z], 1)[1][:, 0]
        else:
            cells = self.indexes[z].cells(x)
        return _priority(positions, self.seed + 1) < self.rates[z][cells]


def _save_checkpoint(path, options, state):
    """Everything pass 3 has built so far, as safetensors (arrays, the FAISS indexes' bytes)
    and JSON; written atomically, so an interrupted save leaves the previous checkpoint."""
    from safetensors.numpy import save_file

    from probe_base.io.paths import atomic_write

    tensors = {"mean": state.mean, "std": state.std}
    meta = {
        "counts": {str(z): n for z, n in state.counts.items()},
        "thinned": sorted(state.thinned),
        "seed": state.seed,
        "position": state.position,
        "chunks_done": state.chunks_done,
        "added": {str(z): n for z, n in state.added.items()},
        "indexes": {},
        "truths": {},
        "flat": sorted(state.flat_parts),
    }
    for z, (pos, points) in state.samples.items():
        tensors[f"sample_positions.{z}"] = np.asarray(pos, dtype=np.int64)
        tensors[f"sample_points.{z}"] = np.asarray(points, dtype=np.float32)
    for z, index in state.indexes.items():
        tensors[f"index.{z}"], meta["indexes"][str(z)] = index.state()
    for z, centroids in state.centroids.items():
        tensors[f"centroids.{z}"] = centroids
    for z, rates in state.rates.items():
        tensors[f"rates.{z}"] = np.asarray(rates, dtype=np.float64)
    for z, (wanted, ids) in state.validation.items():
        tensors[f"validation_positions.{z}"], tensors[f"validation_ids.{z}"] = wanted, ids
        truth = state.truths[z]
        tensors[f"truth_queries.{z}"], tensors[f"truth_labels.{z}"] = truth.queries, truth.labels
        tensors[f"truth_squared.{z}"] = truth.squared
        meta["truths"][str(z)] = {"seen": truth.seen, "take": truth.take}
    for z, parts in state.flat_parts.items():
        n_features = len(state.mean)
        tensors[f"flat.{z}"] = np.concatenate(parts) if parts else np.zeros((0, n_features), np.float32)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    metadata = {CHECKPOINT_KEY: json.dumps({"options": options, "state": meta})}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _load_checkpoint(path, options):
    """The build state a checkpoint holds; None where there is none; a one-line error where
    it belongs to another source or other options, or cannot be read."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        return None
    fix = f"delete {path} to start the build afresh"
    try:
        with safe_open(str(path), framework="np") as handle:
            saved = json.loads(handle.metadata()[CHECKPOINT_KEY])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, KeyError, TypeError, ValueError):
        raise ReferenceError(f"{path}: not a readable reference-build checkpoint (damaged?); {fix}") from None
    if saved["options"] != json.loads(json.dumps(options)):
        changed = sorted(k for k in options if saved["options"].get(k) != json.loads(json.dumps(options[k])))
        raise ReferenceError(
            f"{path}: a checkpoint of a build with other {', '.join(changed)}; run the same command as "
            f"before to resume it, or {fix}"
        )
    meta = saved["state"]
    zs = [int(z) for z in meta["counts"]]
    state = _Build(
        counts={int(z): n for z, n in meta["counts"].items()},
        thinned=set(meta["thinned"]),
        seed=meta["seed"],
        mean=tensors["mean"],
        std=tensors["std"],
        position=meta["position"],
        chunks_done=meta["chunks_done"],
        added={int(z): n for z, n in meta["added"].items()},
    )
    state.samples = {z: (tensors[f"sample_positions.{z}"], tensors[f"sample_points.{z}"]) for z in zs}
    state.indexes = {
        int(z): ElementIndex.from_state(tensors[f"index.{z}"], m, where=f"{path}: element {z}")
        for z, m in meta["indexes"].items()
    }
    state.centroids = {z: tensors[f"centroids.{z}"] for z in zs if f"centroids.{z}" in tensors}
    state.rates = {z: tensors[f"rates.{z}"] for z in zs if f"rates.{z}" in tensors}
    state.validation, state.truths = {}, {}
    for z, t in meta["truths"].items():
        z = int(z)
        ids = tensors[f"validation_ids.{z}"].copy()
        state.validation[z] = (tensors[f"validation_positions.{z}"], ids)
        truth = ExactTruth(tensors[f"truth_queries.{z}"], ids, t["take"] - 1)
        truth.labels, truth.squared, truth.seen = tensors[f"truth_labels.{z}"], tensors[f"truth_squared.{z}"], t["seen"]
        state.truths[z] = truth
    state.flat_parts = {z: [tensors[f"flat.{z}"]] for z in meta["flat"]}
    return state
