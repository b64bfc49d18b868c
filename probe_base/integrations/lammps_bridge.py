"""The probe's side of LAMMPS's ``fix external``: the callback LAMMPS calls every step
(positions to the ASE calculator, its forces, energy and virial back, P(reliable) and novelty
into LAMMPS variables and per-atom data, the watchdog policy over the steps), the fix and
variables it needs once the box exists, and the ``LammpsRun`` record the callback fills.
``probe_base.integrations.lammps_md.run_lammps`` drives it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probe_base.errors import InputError, ProbeError
from probe_base.integrations.lammps_input import LammpsInputError
from probe_base.integrations.watchdog import UnreliableTrajectoryWarning

FIX = "probe_ext"
ATOM_FIX = "probe_atoms"
HALT_FIX = "probe_halt"
HALT_VAR = "probe_stop"


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


class FixExternalCallback:
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


def install_fix_external(lmp, bridge, where):
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
