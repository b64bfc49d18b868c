"""Reading a finished store: ``load_store`` (into memory, or a ``StoreView`` whose per-atom
arrays stay on disk) and ``require_labels``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from probe_base.errors import InputError, StoreError
from probe_base.io.paths import partial_path
from probe_base.store.dataset import StoredDataset
from probe_base.store.shards import _check_shards


class _AtomReader:
    """Reads the per-atom rows of chosen structures of a store file (opened on first use)."""

    def __init__(self, path, store_offsets, n_features):
        self.path, self.offsets, self.n_features = str(path), store_offsets, n_features
        self._h5 = None

    def read(self, rows):
        """[(features float32 (n_i, F), atomic numbers (n_i,))] of store rows ``rows``, in
        that order; runs of consecutive rows are read with one slice."""
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r")
        features, numbers = self._h5["features"], self._h5["atomic_numbers"]
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        out = [None] * len(rows)
        for run in np.split(np.arange(len(rows)), np.flatnonzero(np.diff(ordered) != 1) + 1):
            if not len(run):
                continue
            first, last = self.offsets[ordered[run[0]]], self.offsets[ordered[run[-1]] + 1]
            block_f = features[first:last].astype(np.float32)
            block_z = numbers[first:last].astype(np.int64)
            for position in run:
                row = ordered[position]
                a, b = self.offsets[row] - first, self.offsets[row + 1] - first
                out[order[position]] = (block_f[a:b], block_z[a:b])
        return out


@dataclass
class StoreView(StoredDataset):
    """A finished store whose per-atom arrays stay on disk (``features`` is None): the
    per-structure arrays are in memory, features are read per batch. What a torchrun rank
    trains on, so its memory does not grow with the store's atoms."""

    rows: np.ndarray = None  # (n_structures,) row of each structure in the store file
    reader: _AtomReader = None

    @property
    def n_features(self) -> int:
        return self.reader.n_features

    def padded(self, indices):
        parts = self.reader.read(self.rows[np.asarray(indices)])
        width = max(len(z) for _, z in parts)
        features = np.zeros((len(parts), width, self.n_features), dtype=np.float32)
        numbers = np.zeros((len(parts), width), dtype=np.int64)
        mask = np.zeros((len(parts), width), dtype=bool)
        for i, (f, z) in enumerate(parts):
            features[i, : len(z)], numbers[i, : len(z)], mask[i, : len(z)] = f, z, True
        return features, numbers, mask

    def blocks(self, indices, structures=1024):
        """(features, atomic numbers) of structures ``indices``, ``structures`` at a time."""
        for start in range(0, len(indices), structures):
            parts = self.reader.read(self.rows[np.asarray(indices[start : start + structures])])
            yield np.concatenate([f for f, _ in parts]), np.concatenate([z for _, z in parts])


def load_store(path, lazy: bool = False) -> StoredDataset:
    """Read a finished feature store into memory (features as float32). ``lazy``: keep
    the per-atom arrays on disk and return a ``StoreView``."""
    path = Path(path)
    if not path.exists():
        partial = partial_path(path)
        if partial.exists():
            raise StoreError(
                f"{path}: extraction is unfinished ({partial} exists); run `probe extract` again to resume it"
            )
        raise StoreError(f"{path}: feature store not found; create it with `probe extract`")
    if path.is_dir():
        raise StoreError(f"{path}: is a folder, not a feature store; pass the .h5 file `probe extract` wrote")
    try:
        with h5py.File(path, "r") as h5:
            if not h5.attrs.get("complete", False):
                raise StoreError(_unfinished_message(path))
            _check_shards(h5, path)
            identity = json.loads(h5.attrs["identity"])
            if "content_sha256" in h5.attrs:  # stores before format 2 have none
                identity["content_sha256"] = str(h5.attrs["content_sha256"])
            n_atoms = h5["n_atoms"][:]
            member_energies = h5["member_energies"][:]
            member_force_std = h5["member_force_std"][:]
            offsets = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
            per_structure = dict(
                offsets=offsets,
                energy_pred=h5["energy_pred"][:],
                energy_ref=h5["energy_ref"][:],
                force_rmse=h5["force_rmse"][:],
                force_max_error=h5["force_max_error"][:],
                source_index=h5["source_index"][:],
                member_energies=member_energies if member_energies.shape[1] > 1 else None,
                member_force_std=member_force_std if np.isfinite(member_force_std).any() else None,
                attrs=identity,
            )
            if lazy:
                reader = _AtomReader(path, offsets, h5["features"].shape[1])
                return StoreView(
                    features=None,
                    atomic_numbers=None,
                    atom_force_error=None,
                    atom_force_pred_norm=None,
                    rows=np.arange(len(n_atoms)),
                    reader=reader,
                    **per_structure,
                )
            data = StoredDataset(
                features=h5["features"][:].astype(np.float32),
                atomic_numbers=h5["atomic_numbers"][:].astype(np.int64),
                atom_force_error=h5["atom_force_error"][:],
                # stores before format 3 did not keep it: None, and the map baseline says so
                atom_force_pred_norm=h5["atom_force_pred_norm"][:] if "atom_force_pred_norm" in h5 else None,
                **per_structure,
            )
    except (OSError, KeyError) as exc:
        raise StoreError(
            f"{path}: not a readable mlip-probe feature store ({exc}); re-create it with `probe extract`"
        ) from exc
    return data


def stored_count(partial) -> int | None:
    """How many structures an unfinished extraction holds (None if it cannot be read now)."""
    try:
        with h5py.File(partial, "r") as h5:
            return int(h5.attrs["n_done"])
    except (OSError, KeyError):
        return None


def _unfinished_message(path: Path) -> str:
    finished = path.with_name(path.name[: -len(".partial")]) if path.name.endswith(".partial") else path
    return (
        f"{path}: an unfinished extraction, not a finished feature store; run the same "
        f"`probe extract` again to finish it, then use {finished}"
    )


#: per-atom features beyond this magnitude are refused: no backbone layer gives them, an
#: overwritten or damaged chunk does (and it would overflow the probe's normalisation)
FEATURE_LIMIT = 1e6


def feature_problem(features) -> str | None:
    """Why a block of per-atom features cannot be used (NaN/inf, absurd magnitude), or None."""
    features = np.asarray(features)
    if not np.isfinite(features).all():
        return "NaN or inf"
    largest = float(np.abs(features).max()) if features.size else 0.0
    if largest > FEATURE_LIMIT:
        return f"a value of magnitude {largest:.3g} (above {FEATURE_LIMIT:g})"
    return None


def check_store_values(data: StoredDataset, path) -> None:
    """Refuse a store whose features or predicted/reference energies hold NaN, inf or absurd
    values, naming the first structure (its frame in the input) and the fix."""

    def refuse(i, what):
        frame = int(data.source_index[i]) if data.source_index is not None else i
        raise StoreError(
            f"{path}: structure {i} (input frame {frame}) has {what}; the store is damaged or was "
            "written by a broken backbone: re-create it with `probe extract --overwrite`"
        )

    for name in ("energy_pred", "energy_ref"):
        values = getattr(data, name)
        bad = np.flatnonzero(~np.isfinite(values) | (np.abs(np.nan_to_num(values)) > 1e12))
        if len(bad) and not (name == "energy_ref" and not data.has_labels):
            refuse(int(bad[0]), f"a {name.replace('_', ' ')} of {values[bad[0]]!r}")
    if data.features is not None:
        blocks = [(0, np.arange(len(data)), data.features)]
    else:
        blocks = _streamed_blocks(data)
    for _, structures, features in blocks:
        if feature_problem(features) is None:
            continue
        for i in structures:
            rows = slice(
                data.offsets[i] - data.offsets[structures[0]], data.offsets[i + 1] - data.offsets[structures[0]]
            )
            problem = feature_problem(features[rows])
            if problem:
                refuse(int(i), f"per-atom features with {problem}")


def _streamed_blocks(view, structures=1024):
    indices = np.arange(len(view))
    for start in range(0, len(indices), structures):
        chunk = indices[start : start + structures]
        parts = view.reader.read(view.rows[chunk])
        yield start, chunk, np.concatenate([f for f, _ in parts])


def require_labels(data: StoredDataset, path, purpose: str) -> StoredDataset:
    """Refuse a store ``purpose`` (e.g. "fit") cannot use: no structures, or no labels."""
    if len(data) == 0:
        raise InputError(
            f"{path}: the feature store holds no structures; extract a store with structures before `probe {purpose}`"
        )
    if not data.has_labels:
        raise InputError(
            f"{path}: the feature store has no labels (it was extracted with "
            f"--no-labels); `probe {purpose}` needs reference energies: extract a "
            "labelled store (without --no-labels)"
        )
    return data
