"""The structures behind a feature store, read back from its input file.

The store keeps features and labels but no positions; the report and the chemiscope
export need positions, so they read the frames again from the file named in the store's
identity (``attrs["input"]``, selection ``attrs["index"]``). ``source_index`` numbers the
frames within that selection."""

from __future__ import annotations

import io
from pathlib import Path

import ase.io
import numpy as np

from probe_base.io.data import frame_bytes, frame_numbers, is_extxyz


def atom_rows(data, row) -> slice:
    """The rows of structure ``row``'s atoms in the store's per-atom arrays."""
    return slice(int(data.offsets[row]), int(data.offsets[row + 1]))


def read_stored_frames(data, positions) -> tuple[dict, str | None]:
    """Frames of the store ``data`` at selection positions ``positions`` (values of
    ``data.source_index``): ``({position: Atoms}, None)``, or ``({}, why not)`` when the
    input file is gone, unreadable, or no longer holds the structures that were extracted."""
    identity = getattr(data, "attrs", None) or {}
    path = Path(identity.get("input", ""))
    if not identity.get("input") or not path.is_file():
        return {}, f"the input file the store was extracted from ({path}) is not there"
    wanted = {int(p) for p in positions}
    frames = {}
    try:
        if is_extxyz(path):
            numbers = frame_numbers(path, identity.get("index", ":"))
            at = {numbers[p]: p for p in wanted if p < len(numbers)}
            frames = {at[frame]: atoms for frame, atoms in _read_xyz_frames(path, set(at)).items()}
        else:
            # read in order and stop at the last one needed: no full load of a large file
            for position, atoms in enumerate(ase.io.iread(str(path), index=identity.get("index", ":"))):
                if position in wanted:
                    frames[position] = atoms
                    if len(frames) == len(wanted):
                        break
    except Exception as exc:  # ase's parsers raise many types; say which file
        return {}, f"{path} cannot be read by ase.io ({type(exc).__name__}: {exc})"
    for atoms in frames.values():
        atoms.calc = None
    if len(frames) < len(wanted):
        return {}, f"{path} has fewer frames than when the store was extracted from it"
    return frames, None


def _read_xyz_frames(path, wanted) -> dict:
    """Frames of an (ext)xyz file at file frame numbers ``wanted``, ``{frame: Atoms}``: ase
    parses the wanted frames only, found from the frame offsets of the file's scan (parsing
    every frame up to the last wanted cost a second per thousand)."""
    bounds = frame_bytes(path)
    frames = {}
    with open(path, "rb") as handle:
        for frame in sorted(f for f in wanted if f + 1 < len(bounds)):
            handle.seek(bounds[frame])
            text = handle.read(bounds[frame + 1] - bounds[frame]).decode("utf-8")
            frames[frame] = ase.io.read(io.StringIO(text), format="extxyz")
    return frames


def frames_for_structures(data, structures) -> tuple[list | None, str | None]:
    """The Atoms of store structures ``structures`` (row numbers of ``data``), in that order,
    checked against the store's atomic numbers: ``(list, None)`` or ``(None, why not)``."""
    structures = np.asarray(structures, dtype=np.int64)
    positions = data.source_index[structures]
    frames, why = read_stored_frames(data, positions)
    if why:
        return None, why
    ordered = []
    for row, position in zip(structures, positions):
        atoms = frames[int(position)]
        stored = data.atomic_numbers[atom_rows(data, row)] if data.atomic_numbers is not None else None
        if stored is not None and not np.array_equal(atoms.numbers, stored):
            return None, (
                f"frame {position} of {data.attrs['input']} no longer matches the store "
                "(the file changed after extraction)"
            )
        ordered.append(atoms)
    return ordered, None
