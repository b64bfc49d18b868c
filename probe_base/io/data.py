"""Reading labelled structures: any format ``ase.io`` reads, user-named keys, clear errors.

Every structure is numbered by its position in the file (0-based, as ``--index`` counts),
whatever ``--index`` selected, so an error names the frame a user can find in the file."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ase.io
import numpy as np
from ase import Atoms

from probe_base.errors import InputError

INDEX_EXAMPLES = "use e.g. ':' (all), '10' (one frame), '100:200' or '::2'"


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
            f"Name the key with --energy-key (keys present in atoms.info: {keys}), or pass "
            "--no-labels for a store without labels"
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


def parse_index(index) -> int | slice:
    """``--index`` as ase.io reads it (an int or a slice); a clear error otherwise."""
    from ase.io.formats import string2index

    if isinstance(index, (int, slice)):
        return index
    try:
        selection = string2index(str(index).strip())
    except (ValueError, TypeError):
        raise InputError(f"--index {index!r} is not an ase.io index: {INDEX_EXAMPLES}") from None
    if isinstance(selection, slice) and selection.step == 0:
        raise InputError(f"--index {index!r}: the step cannot be 0; {INDEX_EXAMPLES}")
    if not isinstance(selection, (int, slice)):  # a format-specific string index
        raise InputError(f"--index {index!r} is not an ase.io index of frames: {INDEX_EXAMPLES}")
    return selection


def check_input_file(path, flag="--input") -> Path:
    """A structure file that exists and is a file (checked before any model is loaded)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found; check {flag}")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a structure file; pass a file to {flag}")
    return path


@dataclass(frozen=True)
class _FrameScan:
    n_readable: int  # frames before the first defect (all of them without one)
    defect: str | None  # why frame ``n_readable`` cannot be read, if it cannot
    # (ext)xyz: byte offset of each readable frame's first line, then the end of the last
    starts: np.ndarray | None = None


def is_extxyz(path: Path) -> bool:
    return path.suffix.lower() in {".xyz", ".extxyz"}


@functools.lru_cache(maxsize=32)
def _scan_cached(path_str, file_state) -> _FrameScan:
    path = Path(path_str)
    if is_extxyz(path):
        return _scan_xyz(path)
    n = 0
    try:
        for _ in ase.io.iread(path_str, index=":"):
            n += 1
    except Exception as exc:  # ase's parsers raise many types; say which frame
        return _FrameScan(n, f"cannot be read by ase.io ({type(exc).__name__}: {exc})")
    return _FrameScan(n, None)


def _scan_xyz(path: Path) -> _FrameScan:
    """Frames of an (ext)xyz file from its atom-count lines, without parsing the frames;
    stops at the first frame that cannot be read (bad count, not UTF-8, truncated). Keeps
    where each readable frame starts, so one frame can be read without the others."""
    count, lines_left, header_line = 0, 0, 0
    starts, offset, end = [], 0, 0  # end: after the last complete frame

    def scan(readable, defect=None):
        return _FrameScan(readable, defect, np.array([*starts[:readable], end], dtype=np.int64))

    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return scan(
                    count - 1 if lines_left else count,
                    f"line {line_number} is not UTF-8 text ({exc.reason} at "
                    f"byte {exc.start}); save the file as UTF-8 or fix that line",
                )
            if lines_left == 0:
                stripped = line.strip()
                if not stripped:
                    offset += len(raw)
                    continue
                try:
                    n_atoms = int(stripped)
                    if n_atoms < 0:
                        raise ValueError
                except ValueError:
                    return scan(
                        count,
                        f"line {line_number} should give the number of atoms "
                        f"but reads {stripped[:40]!r}; fix the frame above it "
                        "(wrong atom count or extra lines) or that line",
                    )
                lines_left = n_atoms + 2
                header_line = line_number
                starts.append(offset)
                count += 1
            offset += len(raw)
            lines_left -= 1
            if lines_left == 0:
                end = offset
    if lines_left > 0:
        return scan(
            count - 1,
            f"is truncated: its atom count (line {header_line}) announces "
            f"{lines_left} more line(s) than the file has; complete or "
            "remove it",
        )
    return scan(count)


def frame_bytes(path) -> np.ndarray:
    """Byte offsets of an (ext)xyz file's readable frames, then the end of the last:
    frame i is ``[offsets[i], offsets[i + 1])`` (from the scan ``selected_frames`` makes)."""
    return _scan(Path(path)).starts


def _scan(path: Path) -> _FrameScan:
    check_input_file(path)
    stat = path.stat()
    # ctime too: a rewrite that restores size and mtime still changes it
    state = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return _scan_cached(str(path.resolve()), state)


def selected_frames(path, index=":", allow_empty=False) -> range:
    """The file frame numbers ``index`` selects; refuses a selection that reaches an
    unreadable frame (naming it), and one of no frames unless ``allow_empty``."""
    path = Path(path)
    selection = parse_index(index)
    scan = _scan(path)
    if scan.defect is not None and (_needs_count(selection) or _reaches(selection, scan.n_readable)):
        raise InputError(f"{path}, structure {scan.n_readable}: {scan.defect}")
    n = scan.n_readable
    if isinstance(selection, int):
        frame = selection + n if selection < 0 else selection
        if not 0 <= frame < n:
            raise InputError(
                f"--index {index}: {path} has {n} frame(s) (0 to {n - 1}), no "
                f"frame {selection}; choose a frame in that range"
            )
        return range(frame, frame + 1)
    frames = range(n)[selection]
    if n == 0 and not allow_empty:
        raise InputError(f"{path}: the file is empty (no structures); pass a file with structures in it")
    if not len(frames) and not allow_empty:
        raise InputError(
            f"--index {index} selects no frames of {path}, which has {n} frame(s) (0 to {n - 1}); {INDEX_EXAMPLES}"
        )
    return frames


def _reaches(selection, frame) -> bool:
    """Whether a selection that needs no count includes frames at or after ``frame``."""
    if isinstance(selection, int):
        return selection >= frame
    frames = range(2**62)[selection]
    return bool(len(frames)) and frames[-1] >= frame


def _needs_count(selection) -> bool:
    """Whether ase must know the number of frames to resolve ``selection``."""
    if isinstance(selection, int):
        return selection < 0
    return any(v is not None and v < 0 for v in (selection.start, selection.stop, selection.step))


def frame_numbers(path, index=":"):
    """File frame numbers of the frames ``iread(path, index)`` yields, in order; without
    counting the file's frames when ``index`` does not need the count."""
    selection = parse_index(index)
    if isinstance(selection, int) and selection >= 0:
        return range(selection, selection + 1)
    if isinstance(selection, slice) and not _needs_count(selection):
        start, step = selection.start or 0, selection.step or 1
        stop = selection.stop if selection.stop is not None else 2**62
        return range(start, max(start, stop), step)
    return selected_frames(path, index)


def iter_structures(
    path,
    index: str = ":",
    energy_key: str | None = None,
    forces_key: str | None = None,
    require_energy: bool = True,
    require_forces: bool = True,
    start: int = 0,
) -> Iterator[LabelledStructure]:
    """Stream structures with their reference labels, skipping the first ``start`` of the
    selection. Each is numbered by its position in the file."""
    path = check_input_file(path)
    # extxyz: framing defects are found (and named) by the cheap scan before ase reads
    numbers = selected_frames(path, index) if is_extxyz(path) else frame_numbers(path, index)
    try:
        stream = iter(ase.io.iread(str(path), index=index))
    except Exception as exc:  # noqa: BLE001 - ase's parsers raise many types
        raise InputError(f"{path}: cannot be read by ase.io ({type(exc).__name__}: {exc})") from exc
    position = 0
    while True:
        try:
            atoms = next(stream)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - say which file and frame
            frame = numbers[position] if position < len(numbers) else f"after {numbers[-1]}"
            raise InputError(
                f"{path}, structure {frame}: cannot be read by ase.io "
                f"({type(exc).__name__}: {exc}); fix or remove that frame"
            ) from exc
        if position >= start:
            where = f"{path}, structure {numbers[position]}"
            energy = _reference_energy(atoms, energy_key, where) if require_energy else None
            forces = _reference_forces(atoms, forces_key, where) if require_forces else None
            if energy is not None and not np.isfinite(energy):
                raise InputError(f"{where}: reference energy is {energy}; fix or drop it")
            if forces is not None and forces.shape != (len(atoms), 3):
                raise InputError(f"{where}: forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
            yield LabelledStructure(numbers[position], atoms, energy, forces)
        position += 1


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
    """Number of frames ``index`` selects: cheap for extxyz (reads the atom-count lines
    only), else by reading. Refuses (with the frame) a file it cannot frame."""
    return len(selected_frames(path, index))
