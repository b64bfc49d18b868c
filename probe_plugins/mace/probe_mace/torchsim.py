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

This module runs the integrator; the model is in ``torchsim_model``, the policy and the run
record in ``torchsim_monitor``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from probe_base.errors import InputError

from .torchsim_model import load_torch_sim, probed_model_class
from .torchsim_monitor import BatchMonitor, TorchSimRun

POLICIES = ("ignore", "warn", "stop", "collect")
INTEGRATORS = {"nvt_langevin": "nvt", "nve": "nve", "nvt_nose_hoover": "nvt"}  # name -> torch_sim.integrators module


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
    probed_class = probed_model_class()
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
        monitor = BatchMonitor(run, probed, state, policy, int(patience), top_atoms)
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


__all__ = ["run_torchsim"]
