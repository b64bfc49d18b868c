"""A store over torchrun shards: one file of HDF5 virtual datasets that concatenate the
finished shards in input order, and the check that its shards are still there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from probe_base.errors import StoreError
from probe_base.store.identity import _content_sha256
from probe_base.store.layout import FORMAT_VERSION


def write_virtual_store(store_path, shard_paths, identity) -> Path:
    """Write ``store_path`` as one store over finished shards: each dataset is an HDF5
    virtual dataset that concatenates the shards in the given order. Shard paths are kept
    relative to the store, so the store and its ``.shards`` folder can move together."""
    store_path = Path(store_path)
    shards, versions = [], []
    for path in map(Path, shard_paths):
        with h5py.File(path, "r") as h5:
            if not h5.attrs.get("complete"):
                raise StoreError(f"{path}: shard is unfinished; run the extraction again")
            shapes = {name: (ds.shape, ds.dtype) for name, ds in h5.items()}
            shards.append((os.path.relpath(path, store_path.parent), int(h5.attrs["n_done"]), shapes))
            versions.append(int(h5.attrs.get("format_version", 1)))
    # a shard resumed from a .partial of an older format lacks the datasets added since:
    # the store gets the datasets every shard has, and the oldest shard's format version
    common = set.intersection(*(set(shapes) for _, _, shapes in shards)) if shards else set()
    tmp = store_path.with_name(f".{store_path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w", libver="latest") as h5:
            for name, (shape, dtype) in shards[0][2].items():
                if name not in common:
                    continue
                total = sum(shapes[name][0][0] for _, _, shapes in shards)
                layout = h5py.VirtualLayout((total,) + shape[1:], dtype=dtype)
                start = 0
                for relative, _, shapes in shards:
                    rows = shapes[name][0][0]
                    if rows:
                        layout[start : start + rows] = h5py.VirtualSource(relative, name, shape=shapes[name][0])
                    start += rows
                h5.create_virtual_dataset(name, layout)
            h5.attrs["identity"] = json.dumps(identity)
            h5.attrs["format_version"] = min(versions, default=FORMAT_VERSION)
            h5.attrs["n_done"] = sum(n for _, n, _ in shards)
            h5.attrs["complete"] = True
            h5.attrs["shards"] = json.dumps([{"path": rel, "n_structures": n} for rel, n, _ in shards])
            digests, input_sha256 = [], set()
            for path in map(Path, shard_paths):
                with h5py.File(path, "r") as part:
                    digests.append(part["frame_digest"][:])
                    input_sha256.add(part.attrs.get("input_sha256"))
            h5.attrs["content_sha256"] = _content_sha256(np.concatenate(digests))
            if len(input_sha256) == 1 and None not in input_sha256:
                h5.attrs["input_sha256"] = input_sha256.pop()
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
            raise StoreError(
                f"{path}: its shard {shard_path} is missing or was changed; keep the "
                f"store's .shards folder next to it, or run `probe extract` again"
            )
