"""``probe md``: molecular dynamics in an engine (LAMMPS, TorchSim) with the probed backbone.

    probe md --engine lammps --in in.lmp --adapter mace --model my.model --probe my.probe \\
             --elements C H O --policy stop --patience 3 --collect to_label.xyz
    probe md --engine torchsim --structures batch.xyz --adapter mace --model my.model \\
             --probe my.probe --steps 1000 --temperature 300 --policy stop --collect to_label.xyz

LAMMPS: the backbone runs through its adapter (energy and forces of the first ``--model``),
the probe reads its features, and ``probe_base.integrations.lammps_md.run_lammps`` runs the input.
TorchSim: ``probe_mace.torchsim.run_torchsim`` runs the structures as one batch (Langevin
NVT), the features hooked in TorchSim's own MACE pass. Exit status 0 when the run ends, 3
when ``--policy stop`` ended it (the message names the step and the atoms), 2 on an error.
"""

from __future__ import annotations

STOPPED = 3  # exit status of a run the stop policy ended


def adapter_calculator(adapter):
    """An ASE calculator of an adapter's primary model: energy and forces from ``predict``
    (the pass whose features the probe reads)."""
    import numpy as np
    from ase.calculators.calculator import Calculator, all_changes

    from probe_base.adapter import _numpy

    class AdapterCalculator(Calculator):
        implemented_properties = ["energy", "free_energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            energies, forces = adapter.predict(adapter.models[0], [self.atoms], True)
            energy = float(_numpy(energies).reshape(-1)[0])
            self.results = {
                "energy": energy,
                "free_energy": energy,
                "forces": _numpy(forces).astype(np.float64).reshape(len(self.atoms), 3),
            }

    return AdapterCalculator()


def _print_summary(head, run, collect):
    print(
        head,
        f"{len(run.events)} unreliable stretch(es)"
        + (f", {run.n_collected} frames written to {collect}" if run.n_collected else ""),
        sep="; ",
    )


def _check_files(args, source, flag):
    """The engine's input file exists; --collect / --trusted overwrite none of the inputs."""
    from probe_base.io.data import check_input_file
    from probe_base.io.paths import check_output_file

    check_input_file(source, flag)
    inputs = [source, args.probe, *args.model]
    for option, path in (("--collect", args.collect), ("--trusted", args.trusted)):
        if path is not None:
            check_output_file(path, "extxyz", inputs, option)


def _require(args, engine, **flags):
    from probe_base.errors import InputError

    missing = [flag for flag, value in flags.items() if value is None]
    if missing:
        raise InputError(f"probe md --engine {engine} needs {', '.join(missing)}")


def run_md(args):
    if args.engine == "torchsim":
        return run_torchsim_md(args)
    _require(args, "lammps", **{"--in": args.lammps_input, "--elements": args.elements})
    from probe_base.artifact import load_probe
    from probe_base.cli.backbone import backbone_adapter
    from probe_base.integrations.calculator import ProbedCalculator
    from probe_base.integrations.lammps_md import load_lammps, run_lammps

    _check_files(args, args.lammps_input, "--in")
    load_lammps()  # a missing LAMMPS is said before the backbone loads
    adapter = backbone_adapter(args, args.model)
    artifact = load_probe(args.probe)
    artifact.check_backbone(adapter.fingerprint(), args.allow_backbone_mismatch, source=str(args.probe))
    calculator = ProbedCalculator(
        adapter_calculator(adapter), artifact, adapter, policy="ignore", threshold=args.threshold
    )
    run = run_lammps(
        args.lammps_input,
        calculator,
        args.elements,
        policy=args.policy,
        patience=args.patience,
        threshold=args.threshold,
        collect_path=args.collect,
        trusted_path=args.trusted,
        virial=not args.no_virial,
        log=args.log,
    )
    p = run.reliability
    _print_summary(
        f"probe md: {len(run.steps)} steps scored, P(reliable) min {min(p):.3f}" if p else "probe md: no step scored",
        run,
        args.collect,
    )
    if run.stopped is None:
        return 0
    print(run.stopped["message"])
    kept = f"; last trusted frame (step {run.last_trusted.info['probe_step']})" if run.last_trusted is not None else ""
    if run.last_trusted is not None and args.trusted is not None:
        kept += f" written to {args.trusted}"
    print(f"stopped at step {run.stopped['step']}{kept}; {len(run.skipped)} input command(s) after it not run")
    return STOPPED


def run_torchsim_md(args):
    """``probe md --engine torchsim``: the structures as one TorchSim batch (MACE only)."""
    import ase.io

    from probe_base.errors import InputError

    _require(args, "torchsim", **{"--structures": args.structures, "--steps": args.steps})
    if args.adapter != "mace":
        raise InputError(f"probe md --engine torchsim runs MACE models (--adapter mace), not {args.adapter!r}")
    if args.adapter_option:
        raise InputError("probe md --engine torchsim: TorchSim's MaceModel takes no --adapter-option; drop it")
    _check_files(args, args.structures, "--structures")
    try:
        from probe_mace.torchsim import run_torchsim
    except ImportError as exc:
        raise InputError(
            f"--engine torchsim needs probe-mace with TorchSim ({exc}): pip install 'probe-mace[torchsim]'"
        ) from None
    systems = ase.io.read(args.structures, ":")
    run = run_torchsim(
        systems,
        str(args.model[0]),
        str(args.probe),
        n_steps=args.steps,
        timestep_fs=args.timestep,
        temperature_K=args.temperature,
        policy=args.policy,
        patience=args.patience,
        threshold=args.threshold,
        collect_path=args.collect,
        trusted_path=args.trusted,
        seed=args.seed,
        device=args.device,
        allow_mismatch=args.allow_backbone_mismatch,
    )
    p = run.reliability
    _print_summary(
        f"probe md: {len(systems)} systems, {run.n_steps} steps, {len(run.steps)} scored; "
        + (f"P(reliable) min {p.min():.3f}" if p.size else "no step scored"),
        run,
        args.collect,
    )
    if run.stopped is None:
        return 0
    print(run.stopped["message"])
    print(
        f"stopped at step {run.stopped['step']}"
        + (f"; last trusted frames written to {args.trusted}" if args.trusted else "")
    )
    return STOPPED
