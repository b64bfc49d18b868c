"""Whether a store still matches its input: the identity a store records (input, selection,
label keys, backbone fingerprint), frame digests, and the checks of a rerun against them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from probe_base.adapter import file_sha256
from probe_base.errors import InputError, StoreError
from probe_base.io.data import iter_structures


def _identity(adapter, input_path, index, energy_key, forces_key, with_forces, dtype, labels=True):
    return {
        "input": str(Path(input_path).resolve()),
        "index": index,
        "energy_key": energy_key,
        "forces_key": forces_key,
        "with_forces": with_forces,
        "labels": labels,
        "dtype": dtype,
        "fingerprint": adapter.fingerprint(),
    }


def frame_digest(item, labels=True) -> np.ndarray:
    """16 bytes that change when a frame's atoms, cell or (read) labels change: what the
    store checks its input against on a rerun or a resume."""
    atoms = item.atoms
    digest = hashlib.blake2b(digest_size=16)
    for array in (
        atoms.numbers.astype(np.int64),
        atoms.positions.astype(np.float64),
        np.asarray(atoms.cell, dtype=np.float64),
        atoms.pbc.astype(np.int8),
    ):
        digest.update(np.ascontiguousarray(array).tobytes())
    if labels and item.energy is not None:
        digest.update(np.float64(item.energy).tobytes())
    if labels and item.forces is not None:
        digest.update(np.ascontiguousarray(item.forces, dtype=np.float64).tobytes())
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def _content_sha256(frame_digests: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frame_digests, dtype=np.uint8).tobytes()).hexdigest()


class InputChanged(StoreError):
    """The frames of the input differ from those a store (or ``.partial``) holds."""

    def __init__(self, store_path, input_path, frame):
        where = f"structure {frame} of {input_path} differs" if frame is not None else f"{input_path} has other frames"
        super().__init__(
            f"{store_path}: the input changed since this store was written: use --overwrite to re-extract it ({where})"
        )
        self.frame = frame


def _read_options(identity):
    """iter_structures' label options for a store of ``identity``."""
    labels = identity.get("labels", True)
    return dict(
        energy_key=identity["energy_key"],
        forces_key=identity["forces_key"],
        require_energy=labels,
        require_forces=labels and identity["with_forces"],
    )


def check_input_unchanged(h5, store_path, input_path, identity):
    """Refuse a finished store whose frames are not those of ``input_path`` any more:
    unchanged file bytes are enough; otherwise every selected frame is read and compared."""
    if "frame_digest" not in h5:
        _check_format1_store(h5, store_path, input_path, identity)
        return
    if h5.attrs.get("input_sha256") == file_sha256(input_path):
        return
    stored = h5["frame_digest"][:]
    labels = identity.get("labels", True)
    position = 0
    try:
        for item in iter_structures(input_path, identity["index"], **_read_options(identity)):
            if position >= len(stored) or not np.array_equal(frame_digest(item, labels), stored[position]):
                raise InputChanged(store_path, input_path, item.index)
            position += 1
    except InputError as exc:
        raise InputChanged(store_path, input_path, None) from exc
    if position != len(stored):
        raise InputChanged(store_path, input_path, None)


def _check_format1_store(h5, store_path, input_path, identity):
    """A store written before frame digests: compare what it holds of each frame (atom
    count, elements, reference energy, read from the same file as float64) instead."""
    n_atoms, numbers, energies = h5["n_atoms"][:], h5["atomic_numbers"][:], h5["energy_ref"][:]
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    position = 0
    try:
        for item in iter_structures(input_path, identity["index"], **_read_options(identity)):
            if position >= len(n_atoms):
                raise InputChanged(store_path, input_path, None)
            same = (
                len(item.atoms) == n_atoms[position]
                and np.array_equal(item.atoms.numbers, numbers[offsets[position] : offsets[position + 1]])
                and item.energy == energies[position]
            )
            if not same:
                raise InputChanged(store_path, input_path, item.index)
            position += 1
    except InputError as exc:
        raise InputChanged(store_path, input_path, None) from exc
    if position != len(n_atoms):
        raise InputChanged(store_path, input_path, None)
