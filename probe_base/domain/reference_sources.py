"""The sources a reference is built from: ``StoreSource`` streams the atoms of one or many
finished feature stores chunk by chunk, ``ArraySource`` those of a FeatureSet in memory;
both give ``build_reference`` the same chunks, sizes and identity (what a checkpoint must
match).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from probe_base.domain.index_params import CHUNK_ATOMS, ReferenceError


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
