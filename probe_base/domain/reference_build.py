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

The sources: ``reference_sources.py``; the coreset's hash, samples and rates:
``reference_coreset.py``; the build's state and its checkpoint file: ``build_checkpoint.py``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from probe_base.domain.build_checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_SECONDS,
    _Build,
    _load_checkpoint,
    _save_checkpoint,
)
from probe_base.domain.index_params import (
    APPROXIMATE,
    EXACT_MAX_ATOMS,
    RECALL_K,
    SCALE_SAMPLE,
    TRAIN_PER_CELL,
    VALIDATION_ATOMS,
    ExactTruth,
    ReferenceError,
    _faiss,
    bytes_per_atom,
    index_params,
    training_size,
)
from probe_base.domain.reference_coreset import _coreset_rates, _priority, _Reservoir
from probe_base.domain.reference_file import BuiltReference
from probe_base.domain.reference_index import ElementIndex, element_scale


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
