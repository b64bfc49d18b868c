"""A reliability watchdog for ASE dynamics (MD, optimisers).

    calc = attach(ToyCalculator("toy0.pt"), "toy.probe", policy="ignore")
    atoms.calc = calc
    dyn = Langevin(atoms, 1 * units.fs, temperature_K=300, friction=0.02)
    watchdog = ReliabilityWatchdog(atoms, patience=5, action="stop")
    dyn.attach(watchdog, interval=1)
    dyn.run(1000)          # raises UnreliableTrajectory after 5 unreliable steps in a row

Each call records P(reliable) and the per-atom importance of the current frame (the
attached calculator also writes them to ``atoms.info["probe_reliability"]`` and
``atoms.arrays["probe_importance"]``, so trajectory files written by other observers
carry them). After ``patience`` consecutive calls with P(reliable) below the threshold
(by default the probe's ``decision_threshold``, set by ``probe calibrate``) it

``warn``     emits an ``UnreliableTrajectoryWarning`` (once per unreliable stretch) and
             goes on;
``stop``     raises ``UnreliableTrajectory`` (a ``probe_base.errors.UnreliablePrediction``)
             naming the step and the atoms the probe attended to most, which ends
             ``dyn.run``;
``collect``  appends the stretch's frames (and every further unreliable frame of the same
             stretch) to an extxyz file for labelling, with ``probe_reliability``,
             ``probe_step`` and per-atom ``probe_importance``, and goes on.

With ``collect_path`` set, ``stop`` and ``warn`` also write the stretch that triggered
them to that file (``stop``: before raising, so the frames that ended the run are kept).

Use the calculator with ``policy="ignore"`` so that the watchdog alone decides.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probe_base.decision import DecisionRule
from probe_base.errors import UnreliablePrediction

ACTIONS = ("warn", "stop", "collect")


class UnreliableTrajectory(UnreliablePrediction):
    """Raised by the ``stop`` action: ``step``, ``reliability``, ``atom_importance`` and
    ``top_atoms`` (list of (index, symbol, importance)) describe the last frame."""

    def __init__(self, message, step=None, reliability=None, atom_importance=None, top_atoms=None, history=None):
        super().__init__(message, reliability, atom_importance)
        self.step = step
        self.top_atoms = top_atoms or []
        self.history = history or []


class UnreliableTrajectoryWarning(UserWarning):
    """Emitted by the ``warn`` action."""


@dataclass
class StepRecord:
    step: int
    reliability: float
    importance: np.ndarray | None
    unreliable: bool


class ReliabilityWatchdog:
    """Observer for ``dyn.attach(watchdog, interval=...)``.

    ``atoms_or_calc``: the dynamics' ``Atoms`` (whose calculator comes from
    ``probe_base.attach``) or that calculator itself. ``patience``: consecutive unreliable
    calls that trigger ``action``. ``threshold``: P(reliable) below which a frame counts
    as unreliable (default: the calculator's, i.e. the probe's ``decision_threshold``).
    ``collect_path``: extxyz file offending frames are appended to. ``interval``: the
    interval the watchdog is attached with, to number steps (or pass ``dynamics=dyn`` and
    its ``nsteps`` is used). ``keep_importance``: keep every frame's per-atom importance
    in ``records`` (set False for very long runs of large systems). ``top_atoms``: how
    many atoms messages name.
    """

    def __init__(
        self,
        atoms_or_calc,
        patience: int = 5,
        action: str = "warn",
        collect_path=None,
        threshold: float | None = None,
        interval: int = 1,
        dynamics=None,
        keep_importance: bool = True,
        top_atoms: int = 3,
    ):
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
        if int(patience) < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if action == "collect" and collect_path is None:
            raise ValueError("action='collect' needs collect_path= (an extxyz file to append to)")
        from ase import Atoms

        if isinstance(atoms_or_calc, Atoms):
            self.atoms, self.calc = atoms_or_calc, atoms_or_calc.calc
        else:
            self.atoms, self.calc = None, atoms_or_calc
        if self.calc is None or "reliability" not in getattr(self.calc, "implemented_properties", ()):
            raise TypeError(
                "the watchdog needs a calculator wrapped by probe_base.attach(...) "
                "(one whose results include 'reliability')"
            )
        if getattr(self.calc, "policy", "ignore") != "ignore":
            warnings.warn(
                f"the attached calculator has policy={self.calc.policy!r}; use "
                "attach(..., policy='ignore') so that only the watchdog acts",
                stacklevel=2,
            )
        self.patience = int(patience)
        self.action = action
        self.collect_path = Path(collect_path) if collect_path is not None else None
        # the probe's own rule (the calculator's), unless a cut is given here
        self.rule = (
            DecisionRule(float(threshold), method="fixed")
            if threshold is not None
            else getattr(self.calc, "rule", None) or DecisionRule(float(getattr(self.calc, "threshold", 0.5)))
        )
        self.threshold = self.rule.cut
        self.interval = int(interval)
        self.dynamics = dynamics
        self.keep_importance = keep_importance
        self.n_top = int(top_atoms)
        self.records: list[StepRecord] = []
        self.events: list[dict] = []  # one per triggered unreliable stretch
        self.n_collected = 0
        self.streak = 0
        self._calls = 0
        self._stretch_frames = deque(maxlen=self.patience)
        self._triggered = False

    # ---- what was seen ------------------------------------------------------------------
    @property
    def steps(self) -> np.ndarray:
        return np.array([r.step for r in self.records], dtype=np.int64)

    @property
    def reliabilities(self) -> np.ndarray:
        return np.array([r.reliability for r in self.records], dtype=np.float64)

    @property
    def unreliable_fraction(self) -> float:
        return float(np.mean([r.unreliable for r in self.records])) if self.records else 0.0

    def top_atoms(self, importance, atoms=None) -> list[tuple[int, str, float]]:
        """(index, symbol, importance) of the most attended atoms, largest first."""
        symbols = (atoms if atoms is not None else self._current_atoms()).get_chemical_symbols()
        order = np.argsort(importance)[::-1][: self.n_top]
        return [(int(i), symbols[i], float(importance[i])) for i in order]

    # ---- the observer -------------------------------------------------------------------
    def _current_atoms(self):
        return self.atoms if self.atoms is not None else self.calc.atoms

    def _step(self) -> int:
        if self.dynamics is not None:
            return int(self.dynamics.nsteps)
        return self._calls * self.interval

    def __call__(self):
        step = self._step()
        self._calls += 1
        atoms = self._current_atoms()
        if self.atoms is not None:  # computes only if the positions changed since the forces
            p = float(self.calc.get_property("reliability", self.atoms))
            importance = np.asarray(self.calc.get_property("atom_importance", self.atoms), dtype=np.float64)
        else:
            p = float(self.calc.results["reliability"])
            importance = np.asarray(self.calc.results["atom_importance"], dtype=np.float64)
        in_domain = bool(self.calc.results.get("in_domain", True))
        atoms.info["probe_reliability"] = p
        atoms.arrays["probe_importance"] = importance.copy()
        unreliable = self.rule.unreliable(p, in_domain)  # NaN: unreliable (fail closed)
        self.records.append(StepRecord(step, p, importance.copy() if self.keep_importance else None, unreliable))
        if not unreliable:
            self.streak = 0
            self._triggered = False
            self._stretch_frames.clear()
            return
        self.streak += 1
        if self.collect_path is not None:
            self._stretch_frames.append(self._frame(atoms, step, p, importance))
        if self._triggered:
            if self.action == "collect":  # further unreliable frames of the same stretch
                self._write(list(self._stretch_frames)[-1:])
            return
        if self.streak < self.patience:
            return
        self._triggered = True
        self._trigger(atoms, step, p, importance)

    def _trigger(self, atoms, step, p, importance):
        top = self.top_atoms(importance, atoms)
        recent = self.reliabilities[-self.patience :]
        event = {
            "step": step,
            "first_step": int(self.records[-self.patience].step),
            "reliability": p,
            "top_atoms": top,
            "action": self.action,
        }
        self.events.append(event)
        if self.collect_path is not None:
            self._write(list(self._stretch_frames))
            event["collected"] = len(self._stretch_frames)
        where = ", ".join(f"{symbol}{index} ({weight:.2f})" for index, symbol, weight in top)
        message = (
            f"PROBE watchdog: {self.patience} consecutive unreliable steps "
            f"(P(reliable) < {self.threshold:.3g}) from step {event['first_step']} to step "
            f"{step}; P(reliable) now {p:.3f} (stretch min {recent.min():.3f}); most "
            f"attended atoms: {where}"
        )
        if self.collect_path is not None:
            message += f"; frames saved to {self.collect_path}"
        if self.action == "stop":
            raise UnreliableTrajectory(
                message, step, p, importance, top, [(r.step, r.reliability) for r in self.records[-self.patience :]]
            )
        if self.action == "warn":
            warnings.warn(message, UnreliableTrajectoryWarning, stacklevel=2)

    # ---- collecting ---------------------------------------------------------------------
    @staticmethod
    def _frame(atoms, step, p, importance):
        frame = atoms.copy()  # no calculator: the MLIP's energies are not reference labels
        frame.info["probe_reliability"] = p
        frame.info["probe_step"] = int(step)
        frame.arrays["probe_importance"] = importance.copy()
        return frame

    def _write(self, frames):
        import ase.io

        if not frames:
            return
        self.collect_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.collect_path, "a") as handle:
            ase.io.write(handle, frames, format="extxyz")
        self.n_collected += len(frames)

    def summary(self) -> dict:
        return {
            "n_steps": len(self.records),
            "threshold": self.threshold,
            "unreliable_fraction": self.unreliable_fraction,
            "min_reliability": float(self.reliabilities.min()) if self.records else None,
            "events": self.events,
            "n_collected": self.n_collected,
        }
