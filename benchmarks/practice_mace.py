"""Reliability in practice on MACE backbones and real DFT data: the risk guarantee and the
MD watchdog. (The active-learning round is ``python -m benchmarks active-learning``.)

guarantee  For each dataset, PROBE is fitted once on 40 % of the held-out DFT set (seed 0).
           The other 60 % is split at random, ``--splits`` times, into a calibration half
           and a test half: SGR (``probe calibrate``'s default) picks the threshold on the
           calibration half for target risk alpha and confidence 1 - delta, and the test
           half measures the realised selective risk and coverage. The guarantee holds if
           the fraction of splits whose realised risk exceeds alpha (violations) is at most
           delta, within sampling error. A naive threshold (calibration risk <= alpha, no
           bound) is scored on the same splits to show that the check can see violations.
           CRC is scored as well (its guarantee: E[accepted and unreliable] <= alpha).

md         MACE ethanol (seed 1) in Langevin dynamics through the framework flag
           ``probe_mace.MACECalculator(..., probe=...)``, with the threshold from SGR and the
           ``ReliabilityWatchdog`` (stop after 10 consecutive unreliable steps, saving the
           frames). A 300 K run is the control; a hot run should be stopped. The saved frames
           are then scored by the 4-member MACE ensemble (force std) and compared with the
           300 K frames: disagreement is an independent check that the stop was warranted.

    python -m benchmarks practice guarantee            # ethanol and 3bpa
    python -m benchmarks practice md

(``python -m benchmarks.practice_mace ...``, the spelling the stored result pages quote, runs
the same command.)

Writes benchmarks/results/practice_guarantee_mace_q<quantile>.{json,md,png} and
benchmarks/results/practice_md_mace.{json,md,png} (+ the saved frames .xyz).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from benchmarks.backbones import find_or_train
from benchmarks.common import CACHE, ETHANOL_HELDOUT, RESULTS
from benchmarks.report import write_markdown
from benchmarks.signal_ablation.stores import stores_for

WORK = CACHE / "practice"
# label per dataset: ethanol energies are nearly all accurate (median error ~1 meV), so
# force RMSE is the useful target there; 3BPA uses the official median energy label.
TARGETS = {"ethanol": "force_rmse", "3bpa": "energy"}


def fitted_probe(dataset, seed=0, quantile=0.5):
    """PROBE fitted on 40 % of the dataset's held-out store; (probe path, store, adapter,
    rest indices, P(reliable) and labels of the rest)."""
    from probe_base.artifact import save_probe
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.store import load_store
    from probe_base.workflow.fit import split_holdout

    models = find_or_train("mace", dataset, train=False)
    store_path, adapter = stores_for("mace", dataset, models)[models[0].stem]
    data = load_store(store_path)
    fit_idx, rest_idx = split_holdout(len(data), 0.6, seed)
    probe_path = WORK / f"mace_{dataset}_{TARGETS[dataset]}_q{round(100 * quantile)}.probe"
    fit_data = data.subset(fit_idx)
    label = LabelSpec(target=TARGETS[dataset], quantile=quantile).resolved_on(fit_data)
    if not probe_path.exists():
        clf = ProbeClassifier(seed=seed).fit(fit_data, label.reliable(label.errors(fit_data)))
        WORK.mkdir(parents=True, exist_ok=True)
        save_probe(
            probe_path,
            clf,
            label,
            data.fingerprint,
            {
                "fit_store": str(store_path),
                "store_identity": data.attrs,
                "fit_indices": fit_idx.tolist(),
                "eval_indices": rest_idx.tolist(),
                "decision_threshold": 0.5,
            },
        )
    from probe_base.artifact import load_probe

    artifact = load_probe(probe_path)
    rest = data.subset(rest_idx)
    p = artifact.classifier.predict_proba(rest)[:, 1]
    reliable = (artifact.label.errors(rest) <= artifact.label.threshold).astype(np.int64)
    return probe_path, store_path, adapter, rest_idx, p, reliable, artifact.label


def naive_threshold(p, reliable, alpha):
    """Largest coverage whose *empirical* calibration risk is <= alpha (no bound)."""
    order = np.argsort(-p, kind="stable")
    risk = np.cumsum(1 - reliable[order]) / np.arange(1, len(p) + 1)
    ok = np.flatnonzero(risk <= alpha)
    return float(p[order][ok[-1]]) if len(ok) else np.inf


def guarantee(args):
    from probe_base.selective import binomial_interval, choose_threshold

    out = {"delta": args.delta, "splits": args.splits, "label_quantile": args.quantile, "datasets": {}}
    rows = []
    for dataset in args.datasets:
        _, store_path, _, rest_idx, p, reliable, label = fitted_probe(dataset, quantile=args.quantile)
        rng = np.random.default_rng(1)
        n_cal = len(p) // 2
        per_alpha = {}
        for alpha in args.alphas:
            sgr, naive, crc = [], [], []
            for _ in range(args.splits):
                perm = rng.permutation(len(p))
                cal, test = perm[:n_cal], perm[n_cal:]

                def realised(threshold):
                    accepted = p[test] >= threshold
                    n_acc = int(accepted.sum())
                    risk = float(1 - reliable[test][accepted].mean()) if n_acc else 0.0
                    both = float(np.mean(accepted & (reliable[test] == 0)))
                    return {
                        "coverage": n_acc / len(test),
                        "risk": risk,
                        "violation": risk > alpha,
                        "accepted_and_unreliable": both,
                    }

                control = choose_threshold(p[cal], reliable[cal], alpha, args.delta, "sgr")
                sgr.append(realised(control.threshold))
                naive.append(realised(naive_threshold(p[cal], reliable[cal], alpha)))
                crc.append(realised(choose_threshold(p[cal], reliable[cal], alpha, method="crc").threshold))
            summary = {}
            for name, runs in (("sgr", sgr), ("naive", naive), ("crc", crc)):
                violations = int(sum(r["violation"] for r in runs))
                summary[name] = {
                    "violation_rate": violations / args.splits,
                    "violation_rate_95ci": binomial_interval(violations, args.splits),
                    "mean_coverage": float(np.mean([r["coverage"] for r in runs])),
                    "mean_risk": float(np.mean([r["risk"] for r in runs if r["coverage"] > 0]))
                    if any(r["coverage"] > 0 for r in runs)
                    else None,
                    "mean_accepted_and_unreliable": float(np.mean([r["accepted_and_unreliable"] for r in runs])),
                    "risks": [r["risk"] for r in runs],
                    "coverages": [r["coverage"] for r in runs],
                }
            per_alpha[str(alpha)] = summary
            s, nv = summary["sgr"], summary["naive"]
            lo, hi = s["violation_rate_95ci"]
            rows.append(
                f"| {dataset} | {label.target} ≤ {label.threshold:.3g} | {1 - reliable.mean():.2f} | "
                f"{alpha} | {args.delta} | {s['mean_coverage']:.3f} | "
                f"{s['mean_risk'] if s['mean_risk'] is not None else float('nan'):.3f} | "
                f"{s['violation_rate']:.3f} [{lo:.3f}, {hi:.3f}] | {'yes' if lo <= args.delta else 'NO'} | "
                f"{nv['mean_coverage']:.3f} | {nv['violation_rate']:.3f} | "
                f"{summary['crc']['mean_coverage']:.3f} | {summary['crc']['mean_accepted_and_unreliable']:.3f} |"
            )
        out["datasets"][dataset] = {
            "store": str(store_path),
            "label": label.to_dict(),
            "n_fit": int(len(p) / 0.6 * 0.4 + 0.5),
            "n_calibration": n_cal,
            "n_test": len(p) - n_cal,
            "base_unreliable_rate": float(1 - reliable.mean()),
            "alphas": per_alpha,
        }
    header = (
        "| dataset | label (reliable if) | unreliable rate (no selection) | α | δ | SGR mean coverage | "
        "SGR mean realised risk | SGR violation rate [95% CI] | guarantee met (rate ≤ δ within CI) | "
        "naive coverage | naive violation rate | CRC coverage | CRC E[accepted ∧ unreliable] |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    text = (
        f"# Guaranteed-risk thresholds on MACE backbones ({args.splits} random calibration/test "
        f"splits; unreliable = error above the {args.quantile:g} quantile of the fitting errors)\n\n"
        f"`python -m benchmarks practice guarantee --splits {args.splits} --delta {args.delta} "
        f"--quantile {args.quantile:g} --alphas {' '.join(map(str, args.alphas))}`\n\n{header}\n"
        + "\n".join(rows)
        + "\n"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"practice_guarantee_mace_q{round(100 * args.quantile)}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1))
    write_markdown(RESULTS / f"{stem}.md", text)
    plot_guarantee(out, RESULTS / f"{stem}.png")


def plot_guarantee(out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(out["datasets"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for k, (alpha, summary) in enumerate(out["datasets"][dataset]["alphas"].items()):
            for name, marker in (("sgr", "o"), ("naive", "x")):
                s = summary[name]
                ax.scatter(
                    s["coverages"], s["risks"], s=8, marker=marker, color=f"C{k}", alpha=0.5, label=f"{name} α={alpha}"
                )
            ax.axhline(float(alpha), color=f"C{k}", lw=1, ls="--")
        ax.set_xlabel("coverage on the test half")
        ax.set_ylabel("realised selective risk")
        ax.set_title(f"MACE {dataset}: each point one split")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


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


def practice(args):
    import torch

    torch.set_num_threads(args.threads)
    {"guarantee": guarantee, "md": md}[args.practice](args)
    return 0


def register(sub):
    parser = sub.add_parser(
        "practice",
        help="MACE in practice: the risk guarantee (SGR, CRC) and the MD watchdog",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parts = parser.add_subparsers(dest="practice", required=True)
    g = parts.add_parser("guarantee")
    g.add_argument("--datasets", nargs="+", default=["ethanol", "3bpa"])
    g.add_argument("--splits", type=int, default=200)
    g.add_argument("--delta", type=float, default=0.1)
    g.add_argument(
        "--quantile", type=float, default=0.5, help="unreliable = error above this quantile of the fitting errors"
    )
    g.add_argument("--alphas", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    m = parts.add_parser("md")
    m.add_argument("--temperatures", nargs="+", type=int, default=[300, 1500])
    m.add_argument("--steps", type=int, default=2000)
    m.add_argument("--timestep", type=float, default=0.5)
    m.add_argument("--patience", type=int, default=10)
    m.add_argument("--alpha", type=float, default=0.15)
    m.add_argument("--quantile", type=float, default=0.8)
    m.add_argument("--delta", type=float, default=0.1)
    for p in (g, m):
        p.add_argument("--threads", type=int, default=1)
        p.set_defaults(handler=practice)


if __name__ == "__main__":  # the stored result pages quote `python -m benchmarks.practice_mace ...`
    from benchmarks.__main__ import main

    sys.exit(main(["practice", *sys.argv[1:]]))
