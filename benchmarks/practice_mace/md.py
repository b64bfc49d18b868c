"""``practice md``: MACE ethanol in Langevin dynamics with the probe's SGR threshold and the
reliability watchdog, the stopped frames checked against the ensemble's force spread, and
the result files."""

from __future__ import annotations

import json
import time

import numpy as np

from benchmarks.backbones import find_or_train
from benchmarks.common import ETHANOL_HELDOUT, RESULTS
from benchmarks.practice_mace.probe import WORK, fitted_probe
from benchmarks.report import write_markdown


def md(args):
    import ase.io
    import torch
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from probe_mace import MACEAdapter, MACECalculator

    from probe_base.artifact import load_probe
    from probe_base.integrations.watchdog import ReliabilityWatchdog, UnreliableTrajectory
    from probe_base.scoring import decision_threshold
    from probe_base.workflow.calibrate import calibrate_probe

    torch.set_num_threads(args.threads)
    probe_path, store_path, _, _, _, _, _ = fitted_probe("ethanol", quantile=args.quantile)
    control = calibrate_probe(
        probe_path,
        store_path,
        args.alpha,
        args.delta,
        "sgr",
        output=WORK / "mace_ethanol_md.probe",
        calibration_fraction=1.0,
    )
    probe_md = WORK / "mace_ethanol_md.probe"
    threshold = decision_threshold(load_probe(probe_md))
    models = find_or_train("mace", "ethanol", train=False)
    # start every run from the held-out frame the probe trusts most, so that a stop means
    # the dynamics went somewhere unreliable (not that it started there)
    from probe_base.store import load_store

    data = load_store(store_path)
    p_all = load_probe(probe_md).classifier.predict_proba(data)[:, 1]
    start_index = int(data.source_index[int(np.argmax(p_all))])
    start = ase.io.read(ETHANOL_HELDOUT, start_index)
    ensemble = MACEAdapter(models)
    runs = {}
    for temperature in args.temperatures:
        atoms = start.copy()
        atoms.calc = MACECalculator(
            model_paths=[str(models[0])],
            device="cpu",
            default_dtype="float32",
            probe=str(probe_md),
            probe_policy="ignore",
        )
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(0))
        dyn = Langevin(
            atoms, args.timestep * units.fs, temperature_K=temperature, friction=0.02, rng=np.random.default_rng(0)
        )
        frames_path = RESULTS / f"practice_md_mace_{temperature}K_stopped_frames.xyz"
        frames_path.unlink(missing_ok=True)
        watchdog = ReliabilityWatchdog(
            atoms, patience=args.patience, action="stop", collect_path=frames_path, dynamics=dyn
        )
        dyn.attach(watchdog, interval=1)
        trajectory = []
        dyn.attach(lambda: trajectory.append(atoms.copy()), interval=10)
        started = time.time()
        stop = None
        try:
            dyn.run(args.steps)
        except UnreliableTrajectory as error:
            stop = {"step": error.step, "message": str(error), "top_atoms": error.top_atoms}
        seconds = time.time() - started
        saved = ase.io.read(frames_path, ":") if frames_path.exists() else []

        def force_std(structures):
            if not structures:
                return []
            stds = []
            for i in range(0, len(structures), 32):
                out = ensemble.run(structures[i : i + 32], compute_forces=True, members=True)
                # per atom: sqrt of the summed variance of the force vector over members (as in the store)
                stds += [float(np.sqrt(mf.var(axis=0).sum(axis=-1)).mean()) for mf in out.member_forces]
            return stds

        runs[str(temperature)] = {
            "temperature_K": temperature,
            "steps_run": int(dyn.nsteps),
            "steps_asked": args.steps,
            "seconds": seconds,
            "stopped": stop,
            "reliability": watchdog.reliabilities.tolist(),
            "unreliable_fraction": watchdog.unreliable_fraction,
            "saved_frames": str(frames_path) if saved else None,
            "saved_reliability": [f.info["probe_reliability"] for f in saved],
            "saved_ensemble_force_std": force_std(saved),
            "trajectory_ensemble_force_std": force_std(trajectory),
        }
        r = runs[str(temperature)]
        print(
            f"{temperature} K: {r['steps_run']} steps, stopped: {bool(stop)}, "
            f"{len(saved)} frames saved, {seconds:.0f} s"
        )
    payload = {
        "alpha": args.alpha,
        "delta": args.delta,
        "threshold": threshold,
        "start": {"file": str(ETHANOL_HELDOUT), "index": start_index, "p_reliable": float(p_all.max())},
        "calibration": control.to_dict(),
        "patience": args.patience,
        "timestep_fs": args.timestep,
        "runs": runs,
    }
    (RESULTS / "practice_md_mace.json").write_text(json.dumps(payload, indent=1))
    rows = []
    for r in runs.values():
        traj = np.asarray(r["trajectory_ensemble_force_std"])
        saved = np.asarray(r["saved_ensemble_force_std"])
        top = ", ".join(f"{s}{i} ({w:.2f})" for i, s, w in (r["stopped"] or {}).get("top_atoms", []))
        rows.append(
            f"| {r['temperature_K']} | {r['steps_run']} / {r['steps_asked']} | "
            f"{'step ' + str(r['stopped']['step']) if r['stopped'] else 'no'} | "
            f"{r['unreliable_fraction']:.3f} | {len(saved)} | "
            f"{np.mean(saved) * 1e3 if len(saved) else float('nan'):.0f} | "
            f"{np.median(traj) * 1e3 if len(traj) else float('nan'):.0f} | {top or '-'} |"
        )
    text = (
        f"# MD watchdog on MACE ethanol\n\n`python -m benchmarks practice md`: threshold "
        f"P(reliable) ≥ {threshold:.3f} from SGR (α={args.alpha}, δ={args.delta}, calibration "
        f"coverage {control.coverage:.2f}); stop after {args.patience} consecutive unreliable "
        f"steps; Langevin, {args.timestep} fs, from held-out frame {start_index} "
        f"(P(reliable) {p_all.max():.3f}).\n\n| T (K) | steps run / asked | stopped | "
        "unreliable steps | frames saved | ensemble force std of saved frames (meV/Å) | "
        "median ensemble force std along the run (meV/Å) | most attended atoms at the stop |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    write_markdown(RESULTS / "practice_md_mace.md", text)
    plot_md(payload)


def plot_md(payload):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for k, r in enumerate(payload["runs"].values()):
        ax.plot(r["reliability"], lw=0.8, color=f"C{k}", label=f"{r['temperature_K']} K")
        if r["stopped"]:
            ax.axvline(r["stopped"]["step"], color=f"C{k}", ls=":")
    ax.axhline(payload["threshold"], color="k", ls="--", lw=1, label="SGR threshold")
    ax.set_xlabel("MD step")
    ax.set_ylabel("P(reliable)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "practice_md_mace.png", dpi=120)
