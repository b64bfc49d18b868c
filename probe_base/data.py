"""Reading labelled structures: any format ``ase.io`` reads, user-named keys, clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ase.io
import numpy as np
from ase import Atoms

from .errors import InputError


@dataclass
class LabelledStructure:
    index: int  # position in the input file
    atoms: Atoms
    energy: float | None  # reference total energy, eV
    forces: np.ndarray | None  # reference forces (n_atoms, 3), eV/Å


def _reference_energy(atoms, key, where):
    if key is None:
        calc = atoms.calc
        if calc is not None and "energy" in getattr(calc, "results", {}):
            return float(calc.results["energy"])
        if calc is not None and "free_energy" in getattr(calc, "results", {}):
            return float(calc.results["free_energy"])
        keys = sorted(atoms.info)
        raise InputError(
            f"{where}: no reference energy (no `energy=` on the comment line). "
            f"Name the key with --energy-key; keys present in atoms.info: {keys}"
        )
    if key in atoms.info:
        return float(atoms.info[key])
    raise InputError(
        f"{where}: reference energy key {key!r} not found; keys present in atoms.info: "
        f"{sorted(atoms.info)}. Fix --energy-key or drop the structure."
    )


def _reference_forces(atoms, key, where):
    if key is None:
        calc = atoms.calc
        if calc is not None and "forces" in getattr(calc, "results", {}):
            return np.asarray(calc.results["forces"], dtype=np.float64)
        raise InputError(
            f"{where}: no reference forces (no `forces` column). Name the column with "
            f"--forces-key (columns present: {sorted(atoms.arrays)}), or pass --no-forces"
        )
    if key in atoms.arrays:
        return np.asarray(atoms.arrays[key], dtype=np.float64)
    raise InputError(
        f"{where}: reference forces key {key!r} not found; per-atom columns present: "
        f"{sorted(atoms.arrays)}. Fix --forces-key or pass --no-forces."
    )


def iter_structures(path, index: str = ":", energy_key: str | None = None,
                    forces_key: str | None = None, require_energy: bool = True,
                    require_forces: bool = True, start: int = 0,
                    first_index: int = 0) -> Iterator[LabelledStructure]:
    """Stream structures with their reference labels, skipping the first ``start``; the
    selected frames are numbered from ``first_index`` (a shard of a larger selection)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        stream = ase.io.iread(str(path), index=index)
        for i, atoms in enumerate(stream, start=first_index):
            if i < first_index + start:
                continue
            where = f"{path}, structure {i}"
            energy = _reference_energy(atoms, energy_key, where) if require_energy else None
            forces = _reference_forces(atoms, forces_key, where) if require_forces else None
            if energy is not None and not np.isfinite(energy):
                raise InputError(f"{where}: reference energy is {energy}; fix or drop it")
            if forces is not None and forces.shape != (len(atoms), 3):
                raise InputError(f"{where}: forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
            yield LabelledStructure(i, atoms, energy, forces)
    except InputError:
        raise
    except Exception as exc:  # ase's parsers raise many types; say which file
        raise InputError(f"{path}: cannot be read by ase.io ({type(exc).__name__}: {exc})") from exc


def iter_batches(path, index: str = ":", batch_size: int = 32):
    """Unlabelled structures of ``path`` in lists of ``batch_size`` (for scoring)."""
    batch = []
    for item in iter_structures(path, index, require_energy=False, require_forces=False):
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def count_structures(path, index: str = ":") -> int:
    """Number of frames, cheaply for extxyz (counts header lines), else by reading."""
    path = Path(path)
    if index == ":" and path.suffix in {".xyz", ".extxyz"}:
        count, lines_left = 0, 0
        with open(path) as handle:
            for line in handle:
                if lines_left == 0:
                    stripped = line.strip()
                    if not stripped:
                        continue
                    lines_left = int(stripped) + 2
                    count += 1
                lines_left -= 1
        return count
    return sum(1 for _ in ase.io.iread(str(path), index=index))
