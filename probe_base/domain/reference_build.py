"""The streaming build of the domain's reference from one or many feature stores
(``probe reference build``), resumable from a checkpoint.

``build_reference(source)`` reads ``source.chunks()`` three times (the atomic numbers; the
features for the standardisation, the training samples and the scale; the features
again, standardised, into the indexes), so memory holds one chunk, the samples and the
indexes, never the whole reference. With a memory budget each element keeps a stratified
coreset: the element's atoms are split into k-means cells (the IVF cells, or ``sqrt(n)``
cells of a k-means on its sample for an exact element), each cell keeps at most ``c``
atoms in expectation (a cell with fewer keeps all), with ``c`` chosen so the kept atoms fit
the budget. Sparse cells (the edges of the domain, where novelty is decided) stay whole,
dense ones are thinned. Which atoms a rule keeps depends only on each atom's position in
the concatenated stores (a hash), so a reference built from several stores equals one
built from their concatenation.

With ``checkpoint`` the build saves its state after pass 2 and then every
``CHECKPOINT_SECONDS`` of pass 3 (the indexes filled so far as FAISS bytes, the samples,
the validation atoms' neighbours so far; safetensors, written atomically, never unpickled).
Run again with the same stores and options, it goes on after the last chunk saved and
gives the same reference, bit for bit, as an uninterrupted build (tests/test_reference_build.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from probe_base.domain.reference_index import (
    APPROXIMATE,
    CHUNK_ATOMS,
    EXACT_MAX_ATOMS,
    RECALL_K,
    SCALE_SAMPLE,
    TRAIN_PER_CELL,
    VALIDATION_ATOMS,
    BuiltReference,
    ElementIndex,
    ExactTruth,
    ReferenceError,
    _faiss,
    bytes_per_atom,
    element_scale,
    index_params,
    training_size,
)

CHECKPOINT_SECONDS = 60.0  # pass 3 saves at most this often (a 10^7-atom build's pass 3 takes minutes)
CHECKPOINT_FORMAT = "mlip-probe-reference-build/1"
CHECKPOINT_KEY = "mlip_probe_reference_build"


# ---- streaming sources -------------------------------------------------------------------
class StoreSource:
    """Reference atoms streamed from one or many finished feature stores (in the order
    given), ``chunk_atoms`` at a time (whole structures; a structure larger than that is
    one chunk). The stores must come from the same backbone and layers. The per-structure
    arrays (energies, atom counts) are read whole: a few numbers per structure."""

    def __init__(self, paths, chunk_atoms=CHUNK_ATOMS):
        from probe_base.errors import FingerprintMismatch
        from probe_base.store import load_store

        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ReferenceError("no reference store given: pass at least one store of the backbone's training set")
        self.chunk_atoms = int(chunk_atoms)
        self.views = [load_store(p, lazy=True) for p in self.paths]
        first = self.views[0].fingerprint
        key = ("adapter", "weights_sha256", "layers", "widths")
        for path, view in zip(self.paths[1:], self.views[1:]):
            if tuple(view.fingerprint.get(k) for k in key) != tuple(first.get(k) for k in key):
                raise FingerprintMismatch(
                    f"{path}: extracted with another backbone or other layers than {self.paths[0]}; "
                    "extract every reference store with the same --adapter, --model and --layers"
                )
        self.fingerprint = first
        self.n_features = self.views[0].n_features
        self.max_rows_read = 0  # the most atoms one read returned (the bounded-memory test reads it)

    def identity(self) -> dict:
        """What a checkpoint of a build from this source must match."""
        return {
            "stores": [str(p.resolve()) for p in self.paths],
            "atoms": [int(v.offsets[-1]) for v in self.views],
            "content_sha256": [str((v.attrs or {}).get("content_sha256", "")) for v in self.views],
            "chunk_atoms": self.chunk_atoms,
        }

    @property
    def n_atoms(self) -> int:
        return int(sum(int(v.offsets[-1]) for v in self.views))

    def structure_scalars(self) -> tuple[np.ndarray, np.ndarray]:
        """(predicted energy, atom count) of every structure."""
        energy = np.concatenate([np.asarray(v.energy_pred, dtype=np.float64) for v in self.views])
        counts = np.concatenate([np.diff(v.offsets).astype(np.float64) for v in self.views])
        return energy, counts

    def chunks(self, features=True, skip=0):
        """(features float32 (n, F) or None, atomic numbers (n,)) chunk by chunk, the first
        ``skip`` chunks passed over unread."""
        import h5py

        number = 0
        for path, view in zip(self.paths, self.views):
            offsets = view.offsets
            with h5py.File(path, "r") as h5:
                start = 0
                while start < len(offsets) - 1:
                    # whole structures up to chunk_atoms atoms (at least one structure)
                    stop = int(np.searchsorted(offsets, offsets[start] + self.chunk_atoms, side="right")) - 1
                    stop = max(stop, start + 1)
                    a, b = int(offsets[start]), int(offsets[stop])
                    number += 1
                    if number <= skip:
                        start = stop
                        continue
                    z = h5["atomic_numbers"][a:b].astype(np.int64)
                    f = h5["features"][a:b].astype(np.float32) if features else None
                    self.max_rows_read = max(self.max_rows_read, b - a)
                    yield f, z
                    start = stop


class ArraySource:
    """Reference atoms already in memory (a FeatureSet), streamed in chunks: the same build
    as from stores (what the tests compare a store build with)."""

    def __init__(self, data, chunk_atoms=CHUNK_ATOMS):
        self.data, self.chunk_atoms = data, int(chunk_atoms)
        self.n_features = data.n_features
        self.fingerprint = (getattr(data, "attrs", None) or {}).get("fingerprint", {})

    def identity(self) -> dict:
        digest = hashlib.sha256(np.ascontiguousarray(self.data.features[:: max(1, self.n_atoms // 4096)]).tobytes())
        return {"atoms": self.n_atoms, "sampled_sha256": digest.hexdigest(), "chunk_atoms": self.chunk_atoms}

    @property
    def n_atoms(self) -> int:
        return int(self.data.offsets[-1])

    def structure_scalars(self):
        return np.asarray(self.data.energy_pred, dtype=np.float64), self.data.n_atoms.astype(np.float64)

    def chunks(self, features=True, skip=0):
        for start in range(skip * self.chunk_atoms, self.n_atoms, self.chunk_atoms):
            stop = start + self.chunk_atoms
            f = np.asarray(self.data.features[start:stop], dtype=np.float32) if features else None
            yield f, np.asarray(self.data.atomic_numbers[start:stop], dtype=np.int64)


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


# ---- the streaming build -----------------------------------------------------------------
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


def build_reference(
    source,
    n_neighbors=5,
    exact_max_atoms=EXACT_MAX_ATOMS,
    memory_budget=None,
    nprobe=None,
    seed=0,
    progress=True,
    kind=APPROXIMATE,
    checkpoint=None,
    checkpoint_seconds=CHECKPOINT_SECONDS,
) -> BuiltReference:
    """Build the domain's reference from ``source`` (``StoreSource`` / ``ArraySource``: a
    ``chunks(features, skip)`` generator, ``n_features``, ``structure_scalars()``,
    ``identity()``) in three streaming passes. ``memory_budget``: bytes the indexes may
    take together; above it every element keeps the same fraction of its atoms as a
    stratified k-means coreset (module docstring). ``kind``: the approximate index of
    elements above ``exact_max_atoms``; ``nprobe`` None: tuned per element on validation
    atoms (``ElementIndex.tune``) whose exact neighbours pass 3 finds as the atoms stream in.
    ``checkpoint``: a file the build saves to every ``checkpoint_seconds`` of pass 3 (and
    after pass 2), resumes from when it exists (same source and options, else refused), and
    removes when the build is done."""
    options = {
        "n_neighbors": n_neighbors,
        "exact_max_atoms": exact_max_atoms,
        "memory_budget": memory_budget,
        "nprobe": nprobe,
        "seed": seed,
        "kind": kind,
        "source": source.identity(),
        "format": CHECKPOINT_FORMAT,
    }
    state = _load_checkpoint(checkpoint, options) if checkpoint is not None else None
    if state is None:
        state = _first_passes(source, exact_max_atoms, memory_budget, nprobe, seed, kind, progress)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, options, state)
    _fill(source, state, progress, checkpoint, options, checkpoint_seconds)
    built = _finish(source, state, n_neighbors, memory_budget)
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    return built


def _bar(total, what, progress):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="atom", unit_scale=True, desc=what, disable=not progress, leave=False)


def _first_passes(source, exact_max_atoms, memory_budget, nprobe, seed, kind, progress) -> _Build:
    """Passes 1 (atoms per element) and 2 (standardisation, samples), the trained indexes,
    the coreset rates and the validation atoms: everything pass 3 needs."""
    faiss = _faiss()
    d, total = source.n_features, source.n_atoms

    # pass 1: atoms per element
    counts: dict[int, int] = {}
    with _bar(total, "reference 1/3 elements", progress) as b:
        for _, z in source.chunks(features=False):
            for element, c in zip(*np.unique(z, return_counts=True)):
                counts[int(element)] = counts.get(int(element), 0) + int(c)
            b.update(len(z))
    if not counts:
        raise ReferenceError("the reference has no atoms")
    params = {z: index_params(n, d, exact_max_atoms, nprobe, kind) for z, n in counts.items()}
    need = {z: n * bytes_per_atom(params[z], d) for z, n in counts.items()}
    fraction = 1.0 if memory_budget is None else min(1.0, float(memory_budget) / sum(need.values()))
    target = {z: int(counts[z] * fraction) for z in counts}
    if fraction < 1.0 and min(target.values()) < 2:
        raise ReferenceError(
            f"a memory budget of {memory_budget / 1e6:.3g} MB keeps fewer than 2 atoms of some element "
            f"(the full reference needs {sum(need.values()) / 1e6:.3g} MB): raise --memory-budget"
        )
    thinned = {z for z in counts if target[z] < counts[z]}
    cells_for = {z: params[z].get("nlist") for z in counts}
    for z in thinned:  # an exact element thinned by budget: sqrt(n) k-means cells on its sample
        if cells_for[z] is None:
            cells_for[z] = int(max(1, min(1024, math.sqrt(counts[z]), counts[z] // TRAIN_PER_CELL)))
    # each element's sample: its index's training atoms, its scale's atoms, the atoms that
    # estimate a thinned exact element's k-means cells
    sample_size = {
        z: min(
            counts[z],
            max(
                training_size(params[z], counts[z]),
                SCALE_SAMPLE,
                TRAIN_PER_CELL * cells_for[z] if z in thinned and params[z]["kind"] == "flat" else 0,
            ),
        )
        for z in counts
    }

    # pass 2: standardisation (float64 sums), per-element samples (smallest priorities)
    total_sum, total_squares = np.zeros(d), np.zeros(d)
    reservoirs = {z: _Reservoir(sample_size[z]) for z in counts}
    position = 0
    with _bar(total, "reference 2/3 statistics", progress) as b:
        for f, z in source.chunks():
            total_sum += f.sum(0, dtype=np.float64)
            total_squares += np.square(f, dtype=np.float64).sum(0)
            positions = np.arange(position, position + len(z))
            priority = _priority(positions, seed)
            for element in np.unique(z):
                mine = z == element
                reservoirs[int(element)].offer(priority[mine], positions[mine], f[mine])
            position += len(z)
            b.update(len(z))
    mean = total_sum / total
    std = (np.sqrt(np.maximum(total_squares / total - mean**2, 0.0)) + 1e-6).astype(np.float32)
    mean = mean.astype(np.float32)
    state = _Build(counts=counts, thinned=thinned, seed=seed, mean=mean, std=std, indexes={}, centroids={}, rates={})
    samples = {z: reservoirs[z].sorted() for z in counts}
    state.samples = {z: (pos, state.standardise(f)) for z, (pos, f) in samples.items()}
    for z in sorted(counts):
        pos, points = state.samples[z]
        if params[z]["kind"] != "flat":
            params[z]["seed"] = seed
            take = training_size(params[z], counts[z])
            chosen = np.sort(np.argsort(_priority(pos, seed + 2))[:take])
            state.indexes[z] = ElementIndex.trained(params[z], points[chosen])
        if z in thinned:
            if params[z]["kind"] != "flat":
                cells = state.indexes[z].cells(points)
            else:
                kmeans = faiss.Kmeans(d, cells_for[z], niter=10, seed=seed, max_points_per_centroid=1 << 30)
                kmeans.train(points)
                state.centroids[z] = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
                cells = kmeans.index.search(points, 1)[1][:, 0]
            state.rates[z] = _coreset_rates(cells, cells_for[z], counts[z], target[z])

    # the atoms an approximate element's nprobe is tuned on: sampled atoms the index keeps,
    # their exact neighbours found in pass 3 (each will find itself: excluded when tuning)
    state.validation, state.truths = {}, {}
    for z in sorted(counts):
        if params[z]["kind"] != "flat" and params[z]["nprobe"] is None:
            pos, points = state.samples[z]
            mine = state.kept(z, points, pos)
            pos, points = pos[mine], points[mine]
            chosen = np.sort(np.argsort(_priority(pos, seed + 3), kind="stable")[:VALIDATION_ATOMS])
            state.validation[z] = (pos[chosen], np.full(len(chosen), -1, dtype=np.int64))
            state.truths[z] = ExactTruth(points[chosen], state.validation[z][1], RECALL_K)
    state.flat_parts = {z: [] for z in counts if params[z]["kind"] == "flat"}
    state.added = {z: 0 for z in counts}
    state.position, state.chunks_done = 0, 0
    return state


def _fill(source, state, progress, checkpoint, options, checkpoint_seconds):
    """Pass 3: the standardised atoms into the indexes (exact elements: kept in memory, at
    most exact_max_atoms each), from the chunk after the last one a checkpoint holds."""
    last_save = time.monotonic()
    with _bar(source.n_atoms, "reference 3/3 index", progress) as b:
        b.update(state.position)
        for f, z in source.chunks(skip=state.chunks_done):
            x = state.standardise(f)
            positions = np.arange(state.position, state.position + len(z))
            for element in np.unique(z):
                element = int(element)
                mine = np.flatnonzero(z == element)
                keep = state.kept(element, x[mine], positions[mine])
                points = x[mine[keep]]
                if element in state.flat_parts:
                    state.flat_parts[element].append(points)
                else:
                    state.indexes[element].add(points)
                if element in state.validation:  # their ids in the index, their exact neighbours so far
                    wanted, ids = state.validation[element]
                    at = np.searchsorted(wanted, positions[mine[keep]])
                    hit = (at < len(wanted)) & (wanted[np.minimum(at, len(wanted) - 1)] == positions[mine[keep]])
                    ids[at[hit]] = state.added[element] + np.flatnonzero(hit)
                    state.truths[element].offer(points)
                state.added[element] += len(points)
            state.position += len(z)
            state.chunks_done += 1
            b.update(len(z))
            if checkpoint is not None and time.monotonic() - last_save >= checkpoint_seconds:
                _save_checkpoint(checkpoint, options, state)
                last_save = time.monotonic()


def _finish(source, state, n_neighbors, memory_budget) -> BuiltReference:
    counts, indexes = state.counts, state.indexes
    for z, parts in state.flat_parts.items():
        indexes[z] = ElementIndex.flat(np.concatenate(parts) if parts else np.zeros((0, source.n_features)))
    for z, truth in state.truths.items():
        truth.self_ids = state.validation[z][1]
        indexes[z].tune(truth)

    # the scale: from the sampled atoms the index kept
    scales = {}
    for z in sorted(counts):
        pos, points = state.samples[z]
        if z in state.thinned:
            points = points[state.kept(z, points, pos)]
        scales[z] = element_scale(indexes[z], points[:SCALE_SAMPLE], n_neighbors)

    energy, n_atoms = source.structure_scalars()
    per_atom = energy / np.maximum(n_atoms, 1)
    ranges = {
        "energy_per_atom": (float(per_atom.min()), float(per_atom.max())),
        "n_atoms": (float(n_atoms.min()), float(n_atoms.max())),
    }
    info = {
        "n_atoms": int(source.n_atoms),
        "atoms_per_element": {str(z): counts[z] for z in sorted(counts)},
        "kept_per_element": {str(z): len(indexes[z]) for z in sorted(counts)},
        "memory_budget": memory_budget,
        "coreset": "k-means stratified" if state.thinned else None,
        "fingerprint": getattr(source, "fingerprint", {}),
        "stores": [str(p.resolve()) for p in getattr(source, "paths", [])],
    }
    return BuiltReference(state.mean, state.std, indexes, scales, ranges, n_neighbors, info)


# ---- the checkpoint ----------------------------------------------------------------------
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


def parse_bytes(text: str) -> int:
    """'2G', '500M', '64k' or a plain number of bytes."""
    units = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
    s = str(text).strip().lower().rstrip("b")
    try:
        if s and s[-1] in units:
            return int(float(s[:-1]) * units[s[-1]])
        return int(float(s))
    except ValueError:
        raise ReferenceError(f"--memory-budget {text!r}: give bytes or a size such as 2G or 500M") from None
