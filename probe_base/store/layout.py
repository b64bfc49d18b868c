"""The HDF5 file of a store on disk: its datasets, appending rows, the writer's lock, and
disk space reserved before every write (HDF5 running out of space mid-write damages the file)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np

from probe_base.errors import StoreError
from probe_base.store.dataset import PER_ATOM_FIELDS

# 2: frame digests and the input's content hash; 3: the per-atom predicted force magnitude
# (stores of 1 and 2 are read as they are: the readers check for the datasets they lack)
FORMAT_VERSION = 3
#: datasets format 3 added: a store or a resumed ``.partial`` of format 2 has none of them
ADDED_IN_FORMAT_3 = ("atom_force_pred_norm",)


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
    h5.create_dataset(
        "features", (0, n_features), maxshape=(None, n_features), dtype=dtype, chunks=atom_chunk, fletcher32=True
    )
    for name, dt in [
        ("atomic_numbers", np.int16),
        ("atom_force_error", np.float32),
        ("atom_force_pred_norm", np.float32),
    ]:
        h5.create_dataset(name, (0,), maxshape=(None,), dtype=dt, chunks=(4096,), fletcher32=True)
    for name, dt in [
        ("n_atoms", np.int32),
        ("source_index", np.int64),
        ("energy_pred", np.float64),
        ("energy_ref", np.float64),
        ("force_rmse", np.float64),
        ("force_max_error", np.float64),
        ("member_force_std", np.float64),
    ]:
        h5.create_dataset(name, (0,), maxshape=(None,), dtype=dt, chunks=(1024,), fletcher32=True)
    h5.create_dataset(
        "member_energies",
        (0, n_members),
        maxshape=(None, n_members),
        dtype=np.float64,
        chunks=(1024, n_members),
        fletcher32=True,
    )
    h5.create_dataset("frame_digest", (0, 16), maxshape=(None, 16), dtype=np.uint8, chunks=(1024, 16), fletcher32=True)
    h5.attrs["identity"] = json.dumps(identity)
    h5.attrs["format_version"] = FORMAT_VERSION
    h5.attrs["n_done"] = 0


METADATA_RESERVE = 256 << 10  # bytes kept free for HDF5's own metadata writes


def _bytes_needed(h5, rows: dict) -> int:
    """Disk space that appending ``rows`` can take, generously: twice the rows, one new
    chunk of each dataset, and room for HDF5's metadata."""
    total = METADATA_RESERVE
    for name, value in rows.items():
        dataset = h5[name]
        per_row = dataset.dtype.itemsize * int(np.prod(dataset.shape[1:], dtype=np.int64))
        total += per_row * (2 * len(value) + dataset.chunks[0])
    return total


class DiskFull(StoreError):
    """Not enough disk space to write the next part of a store (nothing was written)."""


def reserve_space(partial: Path, n_bytes: int, n_saved: int, what: str) -> None:
    """Make sure ``n_bytes`` can be written next to ``partial`` by allocating them (then
    freeing them) before HDF5 writes: HDF5 running out of space mid-write damages the file
    beyond repair (and can crash the process)."""
    reserve = partial.with_name(partial.name + ".reserve")
    try:
        fd = os.open(reserve, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, n_bytes)
        finally:
            os.close(fd)
            reserve.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate: trust statvfs
                if shutil.disk_usage(partial.parent).free >= n_bytes:
                    return
            else:
                raise
        free = shutil.disk_usage(partial.parent).free
        raise DiskFull(
            f"{partial}: not enough disk space for {what} ({free / 2**20:.1f} MiB "
            f"free, about {n_bytes / 2**20:.1f} MiB needed); {_saved(n_saved, partial)}: "
            "free space and run the same command again to resume"
        ) from None


def _saved(n: int, partial) -> str:
    if n == 0:
        return "no structure was saved yet"
    return f"the {n} structure{'s' if n > 1 else ''} before it {'are' if n > 1 else 'is'} saved in {partial}"


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
