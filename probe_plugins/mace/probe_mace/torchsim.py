"""PROBE inside TorchSim batched MD (``torch-sim-atomistic`` 0.3.0) with a MACE backbone.

    from probe_mace.torchsim import run_torchsim

    run = run_torchsim(atoms_list, "my.model", "my.probe", n_steps=10_000, timestep_fs=0.5,
                       temperature_K=300, policy="stop", patience=3, collect_path="to_label.xyz")
    run.stopped        # None, or the step, the systems (index in the batch) and their atoms
    run.reliability    # (scored steps, systems) P(reliable); run.in_domain, run.novelty, run.unreliable
    run.state          # TorchSim state at the end (after a stop: at the step it stopped)
    run.last_trusted   # TorchSim state: each system at its last trusted step (last_trusted_step)

``ProbedMaceModel`` is TorchSim's ``MaceModel`` with the probe: forward hooks on the MACE
product blocks capture the per-atom features during TorchSim's own forward pass (the one
that gives the forces: no second backbone pass), the features are split by system
(``state.system_idx``) and every system of the batch is scored by the probe at every call.
It works with ``ts.integrate`` as well (``model.history``: one record per model call; the
integrators call it once per step, call 0 being the initial state); ``run_torchsim`` runs the
integrator's own init/step functions so that a policy can end the run at any step.

Policies as ``probe_base.integrations.watchdog`` and ``probe_base.integrations.lammps_md``, per system of the batch:
after ``patience`` consecutive unreliable scored steps (outside the backbone's domain, or
P(reliable) below the probe's decision cut) ``warn`` warns once per stretch naming the step,
the system and its atoms, and goes on; ``stop`` ends the run cleanly at that step, keeps each
system's last trusted state and writes the untrusted stretch of the system(s) that triggered
to ``collect_path``; ``collect`` writes every unreliable frame and goes on; ``ignore`` only
records. Frames carry ``probe_step``, ``probe_system``, ``probe_reliability``,
``probe_in_domain``, ``probe_novelty`` and per atom ``probe_importance``,
``probe_atom_novelty`` and ``probe_atom_error`` (predicted force error, eV/Å).
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from probe_base.errors import InputError, ProbeError
from probe_base.integrations.watchdog import UnreliableTrajectoryWarning

POLICIES = ("ignore", "warn", "stop", "collect")
INTEGRATORS = {"nvt_langevin": "nvt", "nve": "nve", "nvt_nose_hoover": "nvt"}  # name -> torch_sim.integrators module
INSTALL = "pip install 'probe-mace[torchsim]' (torch-sim-atomistic==0.3.0)"


def load_torch_sim():
    """The ``torch_sim`` module, or one line saying how to install it."""
    try:
        import torch_sim
        from torch_sim.models.mace import MaceModel  # noqa: F401 - the wrapper's base class
    except ImportError as exc:
        raise ProbeError(f"TorchSim is not installed here ({exc}); install it with {INSTALL}") from None
    return torch_sim


@dataclass
class ProbeRecord:
    """One scored model call: per system of the batch."""

    step: int
    reliability: np.ndarray  # (n_systems,) P(reliable), 0 outside the domain
    in_domain: np.ndarray  # (n_systems,) bool
    novelty: np.ndarray  # (n_systems,) largest atom novelty / threshold; NaN without a domain
    unreliable: np.ndarray  # (n_systems,) the decision rule's flag


@functools.cache
def _probed_class():
    load_torch_sim()
    from torch_sim.models.mace import MaceModel

    from probe_base.artifact import ProbeArtifact, load_probe
    from probe_base.scoring import decision_rule, score
    from probe_base.store import FeatureSet

    from .plugin import MACEAdapter

    class ProbedMaceModel(MaceModel):
        """TorchSim's ``MaceModel`` that also scores every system of the batch with a probe.

        ``model``: a MACE ``.model`` file or a loaded MACE module (the backbone the probe was
        fitted on: checked by fingerprint). ``probe``: a ``.probe`` path or a loaded probe.
        ``threshold``: a P(reliable) cut instead of the probe's decision rule.
        ``use_domain=False``: the network alone. ``dtype``: default the model's own.
        ``keep_history``: append a ``ProbeRecord`` per scored call to ``history``.
        After each call: ``last_scores`` (``probe_base.scoring.Scores`` of the batch's systems),
        ``last_unreliable`` and ``last_features`` (the ``FeatureSet`` the probe read); the
        forward's output also holds ``probe_reliability``, ``probe_in_domain`` and
        ``probe_unreliable`` (one value per system).
        """

        def __init__(
            self,
            model,
            probe,
            *,
            threshold=None,
            use_domain=True,
            allow_mismatch=False,
            device=None,
            dtype=None,
            compute_stress=False,
            keep_history=True,
            **mace_options,
        ):
            artifact = probe if isinstance(probe, ProbeArtifact) else load_probe(probe)
            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            layers = artifact.fingerprint.get("layers")
            if isinstance(model, (str, Path)):
                adapter = MACEAdapter([model], layers=layers, device=str(device))
            elif isinstance(model, torch.nn.Module):
                adapter = MACEAdapter.from_models([model.to(device)], layers=layers, device=str(device))
            else:
                raise InputError(
                    f"model is a {type(model).__name__}; pass a MACE .model file or a loaded MACE torch module"
                )
            source = "the probe" if isinstance(probe, ProbeArtifact) else str(probe)
            artifact.check_backbone(adapter.fingerprint(), allow_mismatch, source=source)
            module = adapter.models[0]
            if mace_options.get("enable_cueq"):
                raise InputError(
                    "enable_cueq=True converts the MACE module, whose product blocks the probe reads; "
                    "run ProbedMaceModel without it"
                )
            super().__init__(
                module,
                device=device,
                dtype=dtype or next(module.parameters()).dtype,
                compute_stress=compute_stress,
                **mace_options,
            )
            adapter.models[0] = self.model  # the module TorchSim runs (moved/cast in place)
            self.adapter = adapter
            self.artifact = artifact
            self.use_domain = use_domain
            self.rule = decision_rule(artifact, threshold)
            self.keep_history = keep_history
            self.history: list[ProbeRecord] = []
            self.scoring = True  # run_torchsim turns it off between scored steps
            self.n_calls = 0
            self.last_scores = None
            self.last_unreliable = None
            self.last_features = None
            self._checked_numbers = None
            # hooks stay on the module while this model lives (not added and removed each step)
            self._hooks = adapter.feature_hooks(self.model)
            weakref.finalize(self, self._hooks.remove)

        @property
        def threshold(self) -> float:
            return self.rule.cut

        def remove_hooks(self) -> None:
            """Take the probe's hooks off the MACE module (the model then only scores no more)."""
            self._hooks.remove()

        def _check_elements(self, numbers: torch.Tensor) -> None:
            if self._checked_numbers is not None and torch.equal(numbers, self._checked_numbers):
                return
            supported = self.adapter.known_elements()
            unknown = sorted(set(numbers.cpu().tolist()) - set(supported or ()))
            if supported is not None and unknown:
                from ase.data import chemical_symbols

                names = ", ".join(chemical_symbols[z] for z in unknown)
                known = ", ".join(chemical_symbols[z] for z in sorted(supported))
                raise InputError(
                    f"TorchSim state: element(s) {names} not known to the MACE backbone (trained on {known}); "
                    "drop these systems or use a backbone trained on them"
                )
            self._checked_numbers = numbers.clone()

        def forward(self, state):
            numbers = state.get("atomic_numbers") if isinstance(state, dict) else state.atomic_numbers
            if numbers is not None:
                self._check_elements(numbers)
            captured = self._hooks.captured
            captured.clear()  # a pass that skips a layer must fail, not reuse the last step's features
            out = super().forward(state)
            call = self.n_calls
            self.n_calls += 1
            if not self.scoring:
                captured.clear()
                return out
            features = self.adapter.features_from_capture(captured, int(self.total_atoms))
            captured.clear()
            # MaceModel's ptr: systems are contiguous in a SimState (it checks)
            X = FeatureSet(
                features,
                self.atomic_numbers.detach().cpu().numpy().astype(np.int64),
                self.ptr.detach().cpu().numpy().astype(np.int64),
                out["energy"].detach().to(torch.float64).cpu().numpy().reshape(-1),
            )
            scores = score(self.artifact, X, self.use_domain)
            flags = self.rule.flags(scores.p_reliable, scores.in_domain)
            self.last_scores, self.last_unreliable, self.last_features = scores, flags, X
            if self.keep_history:
                self.history.append(_record(call, scores, flags))
            out["probe_reliability"] = torch.as_tensor(scores.p_reliable, device=self.device)
            out["probe_in_domain"] = torch.as_tensor(scores.in_domain, device=self.device)
            out["probe_unreliable"] = torch.as_tensor(flags, device=self.device)
            return out

    ProbedMaceModel.__module__, ProbedMaceModel.__qualname__ = __name__, "ProbedMaceModel"
    return ProbedMaceModel


def __getattr__(name):
    # the class derives from TorchSim's MaceModel: defined when first asked for
    if name == "ProbedMaceModel":
        return _probed_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _record(step, scores, flags) -> ProbeRecord:
    n = len(scores.p_reliable)
    novelty = scores.novelty if scores.novelty is not None else np.full(n, np.nan)
    return ProbeRecord(
        int(step),
        np.asarray(scores.p_reliable, dtype=np.float64).copy(),
        np.asarray(scores.in_domain, dtype=bool).copy(),
        np.asarray(novelty, dtype=np.float64).copy(),
        np.asarray(flags, dtype=bool).copy(),
    )


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


def _per_system(values, n_systems, what) -> torch.Tensor | float:
    """A float, or one value per system."""
    if np.ndim(values) == 0:
        return float(values)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) != n_systems:
        raise InputError(f"{what} has {len(values)} values for {n_systems} systems; give one number or one per system")
    return values


def _integrator(ts, integrator):
    if callable(integrator):
        return integrator
    if integrator not in INTEGRATORS:
        raise InputError(
            f"integrator {integrator!r} is not one of {', '.join(INTEGRATORS)}; or pass a TorchSim integrator function"
        )
    import importlib

    return getattr(importlib.import_module(f"torch_sim.integrators.{INTEGRATORS[integrator]}"), integrator)


class _Monitor:
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
        run.records.append(_record(step, scores, flags))
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


def run_torchsim(
    systems,
    model,
    probe=None,
    *,
    n_steps: int,
    timestep_fs: float = 1.0,
    temperature_K=300.0,
    integrator="nvt_langevin",
    policy: str = "warn",
    patience: int = 1,
    interval: int = 1,
    threshold: float | None = None,
    collect_path=None,
    trusted_path=None,
    seed: int | None = None,
    device=None,
    dtype=None,
    top_atoms: int = 3,
    use_domain: bool = True,
    allow_mismatch: bool = False,
    **integrator_options,
) -> TorchSimRun:
    """Batched MD in TorchSim with PROBE scoring every system of the batch.

    ``systems``: ``ase.Atoms`` or a list of them (one system each), or a TorchSim state.
    ``model``: a MACE ``.model`` file, a loaded MACE module (with ``probe``: a ``.probe``
    file or loaded probe fitted on it) or a ``ProbedMaceModel``. ``integrator``:
    ``nvt_langevin`` (default), ``nve``, ``nvt_nose_hoover`` or a TorchSim integrator
    function; ``integrator_options`` go to it (e.g. ``gamma``). ``temperature_K``: one value
    or one per system. Every ``interval``-th step is scored (step 0: the initial state);
    ``policy`` (``ignore``, ``warn``, ``stop``, ``collect``) acts after ``patience``
    consecutive unreliable scored steps of a system. ``collect_path``: extxyz the unreliable
    frames go to; ``trusted_path``: extxyz of each system's last trusted frame, written when a
    stop ends the run. ``seed``: seeds the initial momenta and torch's global generator (the
    Langevin noise) for a reproducible run.
    """
    from probe_base.io.paths import atomic_write

    ts = load_torch_sim()
    if policy not in POLICIES:
        raise InputError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    for name, value, least in (("patience", patience, 1), ("interval", interval, 1), ("n_steps", n_steps, 0)):
        if int(value) != value or value < least:
            raise InputError(f"{name} must be a whole number >= {least}, got {value!r}")
    if policy == "collect" and collect_path is None:
        raise InputError("policy='collect' needs collect_path= (an extxyz file for the frames to label)")
    probed_class = _probed_class()
    if isinstance(model, probed_class):
        if probe is not None or threshold is not None:
            raise InputError(
                "model is already a ProbedMaceModel with its probe and rule; leave probe= and threshold= "
                "out (or give them to ProbedMaceModel)"
            )
        probed = model
    else:
        if probe is None:
            raise InputError("probe= is missing: pass the .probe file fitted on this MACE model")
        probed = probed_class(
            model,
            probe,
            threshold=threshold,
            use_domain=use_domain,
            allow_mismatch=allow_mismatch,
            device=device,
            dtype=dtype,
            keep_history=False,
        )
    if isinstance(systems, (list, tuple)) and not systems:
        raise InputError("systems is empty; pass ase.Atoms (one or a list) or a TorchSim state")
    from ase import Atoms

    if isinstance(systems, Atoms) or (isinstance(systems, (list, tuple)) and isinstance(systems[0], Atoms)):
        atoms_list = [systems] if isinstance(systems, Atoms) else list(systems)
        probed.adapter.check_structures(atoms_list, source="systems")
    state = ts.initialize_state(systems, probed.device, probed.dtype)
    n_systems = state.n_systems
    units = ts.units.MetalUnits
    temperature = _per_system(temperature_K, n_systems, "temperature_K")
    kT = torch.as_tensor(temperature, dtype=probed.dtype, device=probed.device) * units.temperature
    dt = torch.tensor(float(timestep_fs) * 1e-3 * units.time, dtype=probed.dtype, device=probed.device)  # ps
    if seed is not None:
        torch.manual_seed(seed)
        integrator_options.setdefault("seed", seed)
    init_fn, update_fn = _integrator(ts, integrator)(model=probed, kT=kT, dt=dt, **integrator_options)

    run = TorchSimRun(threshold=probed.threshold)
    run.collect_path = Path(collect_path) if collect_path is not None else None
    monitor = None
    try:
        probed.scoring = True
        state = init_fn(state)
        monitor = _Monitor(run, probed, state, policy, int(patience), top_atoms)
        stop = monitor.see(0, state)
        step = 0
        while not stop and step < n_steps:
            step += 1
            probed.scoring = step % interval == 0
            state = update_fn(state, kT=kT)
            if probed.scoring:
                stop = monitor.see(step, state)
        run.n_steps = step
        run.state = state
    finally:
        probed.scoring = True
        if monitor is not None and monitor.to_write and run.collect_path is not None:
            _write_frames(run, monitor.to_write, atomic_write)
        if run.stopped is not None and trusted_path is not None:
            import ase.io

            frames = [a for a in run.last_trusted_atoms() if a is not None]
            if frames:
                atomic_write(Path(trusted_path), lambda tmp: ase.io.write(tmp, frames, format="extxyz"))
    return run


def _write_frames(run, frames, atomic_write):
    """Rewrite the whole file: earlier frames of the file kept, the new ones after them."""
    import ase.io

    path = run.collect_path
    before = ase.io.read(path, ":", format="extxyz") if path.exists() and path.stat().st_size else []
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: ase.io.write(tmp, list(before) + list(frames), format="extxyz"))
    run.n_collected += len(frames)


# ProbedMaceModel: defined on first access (the module __getattr__ above)
__all__ = ["ProbeRecord", "ProbedMaceModel", "TorchSimRun", "load_torch_sim", "run_torchsim"]  # noqa: F822
