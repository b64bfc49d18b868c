"""What a ``run_torchsim`` run saw (``TorchSimRun``) and the watchdog policy that fills it
(``BatchMonitor``): per system of the batch, the streaks of unreliable scored steps, the
events and warnings, the stop, the frames to label and each system's last trusted state.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from probe_base.integrations.watchdog import UnreliableTrajectoryWarning

from .torchsim_model import record_scores


@dataclass
class TorchSimRun:
    """What ``run_torchsim`` saw: one ``ProbeRecord`` per scored step, the triggered events
    (one per system and unreliable stretch), the stop (None if it ran to the end), the final
    state and each system's last trusted state."""

    records: list = field(default_factory=list)
    events: list = field(default_factory=list)
    stopped: dict | None = None
    state: object = None
    last_trusted: object = None  # TorchSim state, system i at step last_trusted_step[i]
    last_trusted_step: np.ndarray | None = None  # -1: never trusted
    threshold: float = 0.5
    n_steps: int = 0  # MD steps run
    collect_path: Path | None = None
    n_collected: int = 0

    @property
    def steps(self) -> np.ndarray:
        return np.array([r.step for r in self.records], dtype=np.int64)

    def _stacked(self, name, dtype):
        return np.array([getattr(r, name) for r in self.records], dtype=dtype)

    @property
    def reliability(self) -> np.ndarray:
        """(scored steps, systems) P(reliable)."""
        return self._stacked("reliability", np.float64)

    @property
    def in_domain(self) -> np.ndarray:
        return self._stacked("in_domain", bool)

    @property
    def novelty(self) -> np.ndarray:
        return self._stacked("novelty", np.float64)

    @property
    def unreliable(self) -> np.ndarray:
        return self._stacked("unreliable", bool)

    def last_trusted_atoms(self) -> list:
        """Each system's last trusted frame as ``ase.Atoms`` (``info["probe_step"]``), None for
        a system the probe never trusted."""
        if self.last_trusted is None:
            return []
        frames = []
        for i, atoms in enumerate(_state_atoms(self.last_trusted)):
            if self.last_trusted_step[i] < 0:
                frames.append(None)
                continue
            atoms.info["probe_step"] = int(self.last_trusted_step[i])
            atoms.info["probe_system"] = i
            frames.append(atoms)
        return frames


def _state_atoms(state, systems=None) -> list:
    """``ase.Atoms`` (positions, numbers, cell, pbc) of the state's systems (default: all)."""
    from ase import Atoms

    ptr = _offsets(state)
    positions = state.positions.detach().cpu().numpy()
    numbers = state.atomic_numbers.detach().cpu().numpy()
    cell = state.cell.detach().cpu().numpy()
    pbc = bool(state.pbc)
    out = []
    for i in range(len(ptr) - 1) if systems is None else systems:
        a, b = ptr[i], ptr[i + 1]
        out.append(Atoms(numbers=numbers[a:b], positions=positions[a:b], cell=cell[i].T, pbc=pbc))
    return out


def _offsets(state) -> np.ndarray:
    counts = torch.bincount(state.system_idx.long(), minlength=state.n_systems).cpu().numpy()
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


class BatchMonitor:
    """The policy over the batch: per-system streaks, stretches, events and trusted copies."""

    def __init__(self, run, model, state, policy, patience, top_atoms):
        self.run, self.model, self.policy, self.patience, self.n_top = run, model, policy, patience, top_atoms
        n = state.n_systems
        self.streak = np.zeros(n, dtype=np.int64)
        self.first = np.zeros(n, dtype=np.int64)
        self.triggered = np.zeros(n, dtype=bool)
        self.stretch = [deque(maxlen=patience) for _ in range(n)]
        self.to_write = []
        run.last_trusted = state.clone()
        for name, value in vars(run.last_trusted).items():
            if isinstance(value, torch.Tensor):  # MACE sets requires_grad on the positions: no graph kept
                setattr(run.last_trusted, name, value.detach())
        run.last_trusted_step = np.full(n, -1, dtype=np.int64)
        self.offsets = _offsets(state)
        self.system_of_atom = state.system_idx.long()

    def _keep_trusted(self, step, state, trusted):
        """Copy the trusted systems' rows of every per-atom and per-system tensor."""
        run = self.run
        run.last_trusted_step[trusted] = step
        systems = torch.as_tensor(trusted, device=state.device)
        atoms = systems[self.system_of_atom]
        for name in type(state)._atom_attributes | type(state)._system_attributes:
            value, kept = getattr(state, name, None), getattr(run.last_trusted, name, None)
            if not isinstance(value, torch.Tensor) or not isinstance(kept, torch.Tensor) or value.shape != kept.shape:
                continue
            rows = atoms if name in type(state)._atom_attributes else systems
            if value.shape[:1] == rows.shape:
                kept[rows] = value.detach()[rows]

    def frame(self, i, step, state, scores):
        from probe_base.integrations.calculator import write_scores

        atoms = _state_atoms(state, [i])[0]  # no calculator: the MLIP's energies are not reference labels
        write_scores({}, scores, i, atoms, self.model.rule)
        atoms.info["probe_step"] = int(step)
        atoms.info["probe_system"] = int(i)
        return atoms

    def see(self, step, state) -> bool:
        """Record the step just scored; True when the stop policy ends the run here."""
        scores, flags = self.model.last_scores, self.model.last_unreliable
        run = self.run
        run.records.append(record_scores(step, scores, flags))
        trusted = ~flags
        if trusted.any():
            self._keep_trusted(step, state, trusted)
        if self.policy == "ignore":
            return False
        self.streak[trusted] = 0
        self.triggered[trusted] = False
        for i in np.flatnonzero(trusted):
            self.stretch[i].clear()
        new = []
        for i in np.flatnonzero(flags):
            if self.streak[i] == 0:
                self.first[i] = step
            self.streak[i] += 1
            if run.collect_path is not None:
                self.stretch[i].append(self.frame(i, step, state, scores))
            if self.triggered[i]:
                if self.policy == "collect":
                    self.to_write.append(self.stretch[i][-1])
                continue
            if self.streak[i] >= self.patience:
                self.triggered[i] = True
                new.append(self._event(i, step, state, scores))
        if not new:
            return False
        if run.collect_path is not None:
            for event in new:
                self.to_write += list(self.stretch[event["system"]])
        if self.policy == "stop":
            run.stopped = {
                "step": int(step),
                "systems": [event["system"] for event in new],
                "events": new,
                "message": "; ".join(event["message"] for event in new),
            }
            return True
        if self.policy == "warn":
            for event in new:
                warnings.warn(event["message"], UnreliableTrajectoryWarning, stacklevel=3)
        return False

    def _event(self, i, step, state, scores):
        a, b = self.offsets[i], self.offsets[i + 1]
        numbers = state.atomic_numbers[a:b].cpu().numpy()
        from ase.data import chemical_symbols

        symbols = [chemical_symbols[z] for z in numbers]
        named = []
        if scores.atom_novelty is not None:
            novelty = np.asarray(scores.atom_novelty[i])
            novel = scores.novel_atoms(i)
            named += [(int(k), f"novelty {novelty[k]:.1f}x") for k in novel[: self.n_top]]
        if not named:
            values, what = (
                (scores.atom_error[i], "predicted force error {:.2f} eV/Å")
                if scores.atom_error is not None
                else (scores.importance[i], "attention {:.2f}")
            )
            values = np.asarray(values)
            named = [(int(k), what.format(values[k])) for k in np.argsort(values)[::-1][: self.n_top]]
        p = float(scores.p_reliable[i])
        inside = bool(scores.in_domain[i])
        novelty = float(scores.novelty[i]) if scores.novelty is not None else float("nan")
        why = "outside the backbone's domain" + (f" (novelty {novelty:.2f})" if np.isfinite(novelty) else "")
        why = "; ".join([why, *((scores.reasons or {}).get(i) or [])])  # structure-level: energy, size
        why = why if not inside else f"P(reliable) {p:.3f} < {self.model.threshold:.3g}"
        where = ", ".join(f"{symbols[k]}{k} ({text})" for k, text in named)
        first = int(self.first[i])
        message = (
            f"PROBE in TorchSim: system {i} of the batch unreliable for {int(self.streak[i])} consecutive scored "
            f"step(s), from step {first} to step {step}: {why}; atoms (index in the system, element): {where}"
        )
        event = {
            "step": int(step),
            "first_step": first,
            "system": int(i),
            "reliability": p,
            "in_domain": inside,
            "novelty": novelty,
            "atoms": [(k, symbols[k], text) for k, text in named],
            "action": self.policy,
            "message": message,
        }
        self.run.events.append(event)
        return event
