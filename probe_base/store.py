"""The feature store: one HDF5 file per (backbone, dataset), written by streaming.

Extraction writes ``<store>.partial`` chunk by chunk (a progress marker ``n_done`` is
updated after each flushed chunk) and renames it to ``<store>`` when complete. Running the
same command again resumes after the last flushed chunk. A lock file refuses a second
writer. Training and evaluation read only the finished store.

Under torchrun each rank writes one such store (a shard, ``<store>.shards/<r>-of-<w>.h5``)
and rank 0 then writes ``<store>``: HDF5 virtual datasets that concatenate the shards in
input order, so every reader sees one store (see ``probe_base.distributed``).
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from .data import count_structures, iter_structures
from .errors import InputError, StoreError

FORMAT_VERSION = 1


@dataclass
class FeatureSet:
    """Per-atom features of many structures, flattened: structure i owns atoms
    ``offsets[i]:offsets[i+1]``. This is what the probe reads."""

    features: np.ndarray  # (n_atoms_total, n_features) float32
    atomic_numbers: np.ndarray  # (n_atoms_total,)
    offsets: np.ndarray  # (n_structures + 1,)
    energy_pred: np.ndarray  # (n_structures,) backbone energy, eV

    def __len__(self):
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_features(self) -> int:
        return self.features.shape[1]

    def padded(self, indices):
        """Structures ``indices`` as a padded batch: features (B, N, F) float32, atomic
        numbers (B, N) int64 (0 = padding) and the mask (B, N) of real atoms."""
        counts = self.n_atoms[indices]
        arange = np.arange(int(counts.max()))
        mask = arange[None, :] < counts[:, None]
        atom_index = self.offsets[indices][:, None] + arange[None, :]
        atom_index[~mask] = 0
        return (self.features[atom_index], self.atomic_numbers[atom_index].astype(np.int64) * mask,
                mask)

    def subset(self, indices):
        """A new set of the same class holding structures ``indices`` (in that order)."""
        indices = np.asarray(indices, dtype=np.int64)
        counts = self.n_atoms[indices]
        atom_index = np.concatenate(
            [np.arange(self.offsets[i], self.offsets[i + 1]) for i in indices]
        ) if len(indices) and self.features is not None else np.zeros(0, dtype=np.int64)
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "offsets":
                values[f.name] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            elif f.name in PER_ATOM_FIELDS:
                values[f.name] = value[atom_index] if value is not None else None
            elif isinstance(value, np.ndarray) and value.shape[:1] == (len(self),):
                values[f.name] = value[indices]
            else:
                values[f.name] = value
        return type(self)(**values)

    @classmethod
    def from_backbone_output(cls, output, atoms_list):
        counts = [len(a) for a in atoms_list]
        return cls(
            features=np.concatenate(output.features).astype(np.float32),
            atomic_numbers=np.concatenate([a.numbers for a in atoms_list]),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            energy_pred=np.asarray(output.energies, dtype=np.float64),
        )


PER_ATOM_FIELDS = {"features", "atomic_numbers", "atom_force_error"}


@dataclass
class StoredDataset(FeatureSet):
    """A finished feature store in memory: features plus reference labels."""

    energy_ref: np.ndarray = None  # (n_structures,)
    force_rmse: np.ndarray = None  # (n_structures,) NaN without reference forces
    force_max_error: np.ndarray = None  # (n_structures,)
    atom_force_error: np.ndarray | None = None  # (n_atoms_total,) |F_pred - F_ref|
    source_index: np.ndarray = None  # (n_structures,) index in the input file
    member_energies: np.ndarray | None = None  # (n_structures, n_members)
    member_force_std: np.ndarray | None = None  # (n_structures,) mean per-atom force std
    attrs: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> dict:
        return self.attrs["fingerprint"]


def _identity(adapter, input_path, index, energy_key, forces_key, with_forces, dtype):
    return {
        "input": str(Path(input_path).resolve()),
        "index": index,
        "energy_key": energy_key,
        "forces_key": forces_key,
        "with_forces": with_forces,
        "dtype": dtype,
        "fingerprint": adapter.fingerprint(),
    }


class _WriterLock:
    """An exclusive, process-lifetime lock next to the store (released if we crash)."""

    def __init__(self, store_path: Path):
        self.path = store_path.with_name(store_path.name + ".lock")
        self.handle = None

    def __enter__(self):
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise StoreError(
                f"{self.path.name[:-5]}: another process is writing this feature store; "
                "wait for it to finish or choose another output path"
            ) from None
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.path.unlink(missing_ok=True)


def _create(h5, n_features, dtype, n_members, identity):
    atom_chunk = (4096, n_features)
    h5.create_dataset("features", (0, n_features), maxshape=(None, n_features),
                      dtype=dtype, chunks=atom_chunk)
    for name, dt in [("atomic_numbers", np.int16), ("atom_force_error", np.float32)]:
        h5.create_dataset(name, (0,), maxshape=(None,), dtype=dt, chunks=(4096,))
    for name, dt in [("n_atoms", np.int32), ("source_index", np.int64), ("energy_pred", np.float64),
                     ("energy_ref", np.float64), ("force_rmse", np.float64),
                     ("force_max_error", np.float64), ("member_force_std", np.float64)]:
        h5.create_dataset(name, (0,), maxshape=(None,), dtype=dt, chunks=(1024,))
    h5.create_dataset("member_energies", (0, n_members), maxshape=(None, n_members),
                      dtype=np.float64, chunks=(1024, n_members))
    h5.attrs["identity"] = json.dumps(identity)
    h5.attrs["format_version"] = FORMAT_VERSION
    h5.attrs["n_done"] = 0


def _append(h5, rows: dict):
    for name, value in rows.items():
        dataset = h5[name]
        start = dataset.shape[0]
        dataset.resize(start + len(value), axis=0)
        dataset[start:] = value


def _truncate_to_done(h5):
    """Drop rows of a chunk that was being written when the process died."""
    n_done = int(h5.attrs["n_done"])
    n_atoms_done = int(np.sum(h5["n_atoms"][:n_done]))
    for name, dataset in h5.items():
        target = n_atoms_done if name in PER_ATOM_FIELDS else n_done
        if dataset.shape[0] != target:
            dataset.resize(target, axis=0)
    return n_done


def _rows_from_batch(batch, output, with_forces):
    rows = {
        "features": np.concatenate(output.features),
        "atomic_numbers": np.concatenate([s.atoms.numbers for s in batch]).astype(np.int16),
        "n_atoms": np.array([len(s.atoms) for s in batch], dtype=np.int32),
        "source_index": np.array([s.index for s in batch], dtype=np.int64),
        "energy_pred": output.energies,
        "energy_ref": np.array([s.energy for s in batch], dtype=np.float64),
    }
    n_members = output.member_energies.shape[1] if output.member_energies is not None else 1
    rows["member_energies"] = (output.member_energies if output.member_energies is not None
                               else output.energies[:, None])
    if with_forces:
        atom_err = [np.linalg.norm(f_pred - s.forces, axis=1) for f_pred, s in zip(output.forces, batch)]
        rows["atom_force_error"] = np.concatenate(atom_err).astype(np.float32)
        rows["force_rmse"] = np.array([np.sqrt(np.mean((f - s.forces) ** 2))
                                       for f, s in zip(output.forces, batch)])
        rows["force_max_error"] = np.array([e.max() for e in atom_err])
    else:
        n_total = rows["atomic_numbers"].shape[0]
        rows["atom_force_error"] = np.full(n_total, np.nan, dtype=np.float32)
        rows["force_rmse"] = np.full(len(batch), np.nan)
        rows["force_max_error"] = np.full(len(batch), np.nan)
    if output.member_forces is not None and n_members > 1:
        # per atom: sqrt of the summed variance of the force vector over members
        rows["member_force_std"] = np.array([
            np.sqrt(mf.var(axis=0).sum(axis=-1)).mean() for mf in output.member_forces
        ])
    else:
        rows["member_force_std"] = np.full(len(batch), np.nan)
    return rows


def extract(adapter, input_path, store_path, *, index: str = ":", energy_key=None,
            forces_key=None, with_forces: bool = True, batch_size: int = 32,
            chunk_structures: int = 256, dtype: str = "float32", overwrite: bool = False,
            progress: bool = True, first_index: int = 0, n_total: int | None = None) -> Path:
    """Stream ``input_path`` through ``adapter`` into the HDF5 store ``store_path``.

    ``first_index`` numbers the selected frames from there (a shard's frames keep their
    position in the whole selection); ``n_total``, if known, saves counting the frames."""
    if dtype not in ("float32", "float16"):
        raise InputError(f"feature dtype must be float32 or float16, not {dtype!r}")
    store_path = Path(store_path)
    partial = store_path.with_name(store_path.name + ".partial")
    identity = _identity(adapter, input_path, index, energy_key, forces_key, with_forces, dtype)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    with _WriterLock(store_path):
        if store_path.exists() and not overwrite:
            with h5py.File(store_path, "r") as h5:
                if json.loads(h5.attrs["identity"]) == identity:
                    return store_path  # already complete
            raise StoreError(
                f"{store_path} exists and was made from other input or another backbone; "
                "pass --overwrite to replace it or choose another output path"
            )
        if overwrite:
            store_path.unlink(missing_ok=True)
            partial.unlink(missing_ok=True)
        if n_total is None:
            n_total = count_structures(input_path, index)
        n_members = len(adapter.models)
        mode = "r+" if partial.exists() else "w"
        with h5py.File(partial, mode) as h5:
            if mode == "w":
                _create(h5, adapter.n_features, dtype, n_members, identity)
                n_done = 0
            else:
                if json.loads(h5.attrs["identity"]) != identity:
                    raise StoreError(
                        f"{partial} is an unfinished extraction of other input or another "
                        "backbone; delete it or pass --overwrite"
                    )
                n_done = _truncate_to_done(h5)
            _stream_into(h5, adapter, input_path, index, energy_key, forces_key, with_forces,
                         batch_size, chunk_structures, n_done, n_total, progress, partial,
                         first_index)
            h5.attrs["complete"] = True
        os.replace(partial, store_path)
    return store_path


def _stream_into(h5, adapter, input_path, index, energy_key, forces_key, with_forces,
                 batch_size, chunk_structures, n_done, n_total, progress, partial, first_index):
    pending_rows: list[dict] = []
    pending_count = 0

    def flush():
        nonlocal pending_rows, pending_count
        if not pending_rows:
            return
        merged = {k: np.concatenate([r[k] for r in pending_rows]) for k in pending_rows[0]}
        _append(h5, merged)
        h5.attrs["n_done"] = int(h5.attrs["n_done"]) + pending_count
        h5.flush()
        pending_rows, pending_count = [], 0

    def run_batch(batch):
        nonlocal pending_count
        output = adapter.run([s.atoms for s in batch], compute_forces=with_forces,
                             source=str(input_path), indices=[s.index for s in batch])
        pending_rows.append(_rows_from_batch(batch, output, with_forces))
        pending_count += len(batch)

    bar = tqdm(total=n_total, initial=n_done, unit="struct", desc="extract", disable=not progress)
    batch = []
    try:
        for item in iter_structures(input_path, index, energy_key, forces_key,
                                    require_forces=with_forces, start=n_done,
                                    first_index=first_index):
            adapter.check_structures([item.atoms], str(input_path), [item.index])
            batch.append(item)
            if len(batch) == batch_size:
                run_batch(batch)
                bar.update(len(batch))
                batch = []
                if pending_count >= chunk_structures:
                    flush()
        if batch:
            run_batch(batch)
            bar.update(len(batch))
        flush()
    except InputError as exc:
        # keep everything before the bad structure, then tell the user how to go on
        if batch:
            try:
                run_batch(batch)
            except InputError:
                pass
        flush()
        raise InputError(
            f"{exc}\nThe {int(h5.attrs['n_done'])} structures before it are saved in {partial}; "
            "fix the input and run the same command again to resume."
        ) from exc
    finally:
        bar.close()


def write_virtual_store(store_path, shard_paths, identity) -> Path:
    """Write ``store_path`` as one store over finished shards: each dataset is an HDF5
    virtual dataset that concatenates the shards in the given order. Shard paths are kept
    relative to the store, so the store and its ``.shards`` folder can move together."""
    store_path = Path(store_path)
    shards = []
    for path in map(Path, shard_paths):
        with h5py.File(path, "r") as h5:
            if not h5.attrs.get("complete"):
                raise StoreError(f"{path}: shard is unfinished; run the extraction again")
            shapes = {name: (ds.shape, ds.dtype) for name, ds in h5.items()}
            shards.append((os.path.relpath(path, store_path.parent), int(h5.attrs["n_done"]), shapes))
    tmp = store_path.with_name(f".{store_path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as h5:
            for name, (shape, dtype) in shards[0][2].items():
                total = sum(shapes[name][0][0] for _, _, shapes in shards)
                layout = h5py.VirtualLayout((total,) + shape[1:], dtype=dtype)
                start = 0
                for relative, _, shapes in shards:
                    rows = shapes[name][0][0]
                    if rows:
                        layout[start:start + rows] = h5py.VirtualSource(relative, name, shape=shapes[name][0])
                    start += rows
                h5.create_virtual_dataset(name, layout)
            h5.attrs["identity"] = json.dumps(identity)
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["n_done"] = sum(n for _, n, _ in shards)
            h5.attrs["complete"] = True
            h5.attrs["shards"] = json.dumps([{"path": rel, "n_structures": n} for rel, n, _ in shards])
        os.replace(tmp, store_path)
    finally:
        tmp.unlink(missing_ok=True)
    return store_path


def _check_shards(h5, path: Path):
    """A virtual store reads fill values where a shard is missing: refuse that instead."""
    for shard in json.loads(h5.attrs.get("shards", "[]")):
        shard_path = path.parent / shard["path"]
        try:
            with h5py.File(shard_path, "r") as part:
                n_done = int(part.attrs["n_done"])
        except (OSError, KeyError):
            n_done = None
        if n_done != shard["n_structures"]:
            raise StoreError(f"{path}: its shard {shard_path} is missing or was changed; keep the "
                             f"store's .shards folder next to it, or run `probe extract` again")


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
            features[i, :len(z)], numbers[i, :len(z)], mask[i, :len(z)] = f, z, True
        return features, numbers, mask

    def blocks(self, indices, structures=1024):
        """(features, atomic numbers) of structures ``indices``, ``structures`` at a time."""
        for start in range(0, len(indices), structures):
            parts = self.reader.read(self.rows[np.asarray(indices[start:start + structures])])
            yield np.concatenate([f for f, _ in parts]), np.concatenate([z for _, z in parts])


def load_store(path, lazy: bool = False) -> StoredDataset:
    """Read a finished feature store into memory (features as float32). ``lazy``: keep
    the per-atom arrays on disk and return a ``StoreView``."""
    path = Path(path)
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        if partial.exists():
            raise StoreError(f"{path}: extraction is unfinished ({partial} exists); "
                             "run `probe extract` again to resume it")
        raise StoreError(f"{path}: feature store not found; create it with `probe extract`")
    try:
        with h5py.File(path, "r") as h5:
            _check_shards(h5, path)
            identity = json.loads(h5.attrs["identity"])
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
                return StoreView(features=None, atomic_numbers=None, atom_force_error=None,
                                 rows=np.arange(len(n_atoms)), reader=reader, **per_structure)
            data = StoredDataset(
                features=h5["features"][:].astype(np.float32),
                atomic_numbers=h5["atomic_numbers"][:].astype(np.int64),
                atom_force_error=h5["atom_force_error"][:],
                **per_structure,
            )
    except (OSError, KeyError) as exc:
        raise StoreError(f"{path}: not a readable mlip-probe feature store ({exc})") from exc
    return data
