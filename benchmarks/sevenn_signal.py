"""SevenNet-0 as a frozen foundation backbone: does PROBE flag its unreliable predictions
on molecular data better than ensemble disagreement?

Backbone: SevenNet-0 (11Jul2024), as shipped with sevenn, never retrained. Ensemble for the
disagreement baseline: the bundled checkpoints of the same level of theory (PBE, MPtrj):
SevenNet-0 11Jul2024 + 22May2024 + l3i5. Data: the shared ethanol test set (1000 MD
configurations, PBE/def2-SVP energies). The core workflow: ``store.extract`` (default
layer, the last gate's 128 scalars; energies and forces of every member), ``fit_probe`` on
half (label: total-energy error above the fitting half's median), ``evaluate_probe`` on
the other half (AUROC, AURC, ... with 95 % bootstrap intervals, PROBE vs ensemble E/F std,
latent distance, random).

SevenNet-0 is trained on PBE crystals (VASP energies): against these molecular energies
it has a large, nearly constant offset. A second run removes it: the target is
|E_pred - E_ref - m| with m the fitting half's mean signed error (the core has no such
option, so a copy of the store with E_ref shifted by m is fitted and evaluated with the
same split).

    OMP_NUM_THREADS=1 python -m benchmarks sevenn-signal      # ~10 min on one thread

(in an environment with probe-sevenn installed, e.g. ``nox -s sevenn``'s).

Writes benchmarks/results/sevenn_signal_ethanol.{json,md}; the stores go to
benchmarks/cache/stores/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import h5py
import numpy as np
import torch
from scipy.stats import spearmanr

from benchmarks.common import CACHE, ETHANOL_HELDOUT, RESULTS
from benchmarks.report import write_markdown
from probe_base.labels import LabelSpec
from probe_base.net.classifier import ProbeClassifier
from probe_base.report.bootstrap import format_table
from probe_base.store import extract, load_store
from probe_base.workflow.evaluate import evaluate_probe
from probe_base.workflow.fit import fit_probe, split_holdout

STORES = CACHE / "stores"  # the stores and probes of this benchmark
MODELS = ["7net-0", "7net-0_22May2024", "7net-l3i5"]
METRICS = ("auroc", "auprc", "aurc", "e_aurc", "spearman", "ece")


def backbone_stats(data):
    signed = data.energy_pred - data.energy_ref
    stats = {
        "energy_mean_signed_eV": float(signed.mean()),
        "energy_signed_std_meV": 1000 * float(signed.std()),
        "energy_mae_after_offset_meV": 1000 * float(np.abs(signed - signed.mean()).mean()),
        # is the error systematic along the data? (rank correlation with E_ref, E_pred)
        "spearman_signed_error_vs_E_ref": float(spearmanr(signed, data.energy_ref).statistic),
        "spearman_signed_error_vs_E_pred": float(spearmanr(signed, data.energy_pred).statistic),
        "force_rmse_meV_per_A": 1000 * float(np.sqrt(np.mean(data.force_rmse**2))),
    }
    if data.member_energies is not None:
        ref = data.energy_ref[:, None]
        stats["member_mean_signed_eV"] = (data.member_energies - ref).mean(0).tolist()
        stats["member_signed_std_meV"] = (1000 * (data.member_energies - ref).std(0)).tolist()
        stats["ensemble_energy_std_median_meV"] = 1000 * float(np.median(data.member_energies.std(1)))
    return stats


def shifted_store(store, fit_idx):
    """A copy of ``store`` with E_ref shifted by the fitting set's mean signed error."""
    data = load_store(store)
    offset = float(np.mean((data.energy_pred - data.energy_ref)[fit_idx]))
    copy = store.with_name(store.stem + "_offset_removed.h5")
    shutil.copyfile(store, copy)
    with h5py.File(copy, "r+") as h5:
        h5["energy_ref"][...] = h5["energy_ref"][:] + offset
    return copy, offset


def run_probe(store, name, seed):
    """The default probe, and the same without the predicted energy as an input
    ("features only"), both against the baselines on the held-out half."""
    probe = STORES / f"{name}.probe"
    t0 = time.perf_counter()
    fitted = fit_probe(
        store, probe, LabelSpec("energy", quantile=0.5), ProbeClassifier(seed=seed), eval_fraction=0.5, split_seed=seed
    )
    label, clf = fitted.label_, fitted.classifier_
    fit_seconds = time.perf_counter() - t0
    evaluation = evaluate_probe(probe, store, n_bootstrap=1000, seed=seed)
    metrics = dict(evaluation["metrics"])
    features_only = STORES / f"{name}_features_only.probe"
    fit_probe(
        store,
        features_only,
        LabelSpec("energy", quantile=0.5),
        ProbeClassifier(seed=seed, extras=("log_n_atoms",)),
        eval_fraction=0.5,
        split_seed=seed,
    )
    other = evaluate_probe(features_only, store, n_bootstrap=1000, seed=seed)["metrics"]["PROBE"]
    metrics = {"PROBE": metrics.pop("PROBE"), "PROBE (features only)": other, **metrics}
    return {
        "threshold_eV": label.threshold,
        "fit_seconds": fit_seconds,
        "epochs": [len(h) for h in clf.history_],
        "n_eval": evaluation["n_structures"],
        "unreliable_fraction": evaluation["unreliable_fraction"],
        "metrics": metrics,
    }, format_table(metrics, METRICS)


def cost(adapter, n=64, repeats=5):
    """Seconds per structure (energy + forces, one batch of ``n``): primary pass, the same
    with PROBE's hooks, every ensemble member. Best of ``repeats`` (interleaved), so that
    other processes on a shared machine inflate no ratio."""
    import ase.io

    frames = ase.io.read(ETHANOL_HELDOUT, f":{n}")
    primary = type(adapter).from_models(adapter.models[:1], layers=adapter.layers)
    jobs = [lambda: primary.predict(primary.models[0], frames, True), lambda: primary.run(frames, members=False)]
    jobs += [lambda m=m: adapter.predict(m, frames, True) for m in adapter.models]
    best = [np.inf] * len(jobs)
    for job in jobs:
        job()  # warm-up
    for _ in range(repeats):
        for k, job in enumerate(jobs):
            t0 = time.perf_counter()
            job()
            best[k] = min(best[k], (time.perf_counter() - t0) / n)
    plain, hooked, members = best[0], best[1], best[2:]
    return {
        "structures": n,
        "primary_s": plain,
        "primary_with_hooks_s": hooked,
        "hook_overhead": hooked / plain - 1,
        "members_s": members,
        "ensemble_s": float(sum(members)),
    }


def markdown(payload):
    b, c = payload["backbone"], payload["cost"]
    lines = [
        f"### SevenNet-0 (frozen, {payload['sevenn']}) on {payload['n_structures']} ethanol MD "
        "configurations (PBE/def2-SVP)",
        "",
        f"Ensemble: {', '.join(payload['models'])}. Default layer {payload['layers']} "
        f"({payload['n_features']} features). Split 50/50 (seed {payload['seed']}); label: "
        "energy error above the fitting half's median.",
        "",
        f"SevenNet-0 energy offset vs the data: mean signed error {b['energy_mean_signed_eV']:.1f} eV; "
        f"spread (std) {b['energy_signed_std_meV']:.0f} meV; MAE after removing the offset "
        f"{b['energy_mae_after_offset_meV']:.0f} meV; force RMSE {b['force_rmse_meV_per_A']:.0f} meV/Å; "
        f"median ensemble E std {b['ensemble_energy_std_median_meV']:.0f} meV. Spearman of the signed "
        f"error with E_ref {b['spearman_signed_error_vs_E_ref']:.2f}, with E_pred "
        f"{b['spearman_signed_error_vs_E_pred']:.2f}.",
        "",
    ]
    for key, title in (
        ("raw", "|E_pred - E_ref| (offset included)"),
        (
            "offset_removed",
            f"|E_pred - E_ref - m|, m = fitting half's mean signed error ({payload['offset_eV']:.2f} eV)",
        ),
    ):
        run = payload[key]
        lines += [
            f"#### Target {title}: threshold {run['threshold_eV']:.3f} eV, "
            f"{run['n_eval']} held out, {run['unreliable_fraction']:.0%} unreliable",
            "",
            "| method | " + " | ".join(METRICS) + " |",
            "|---" * (len(METRICS) + 1) + "|",
        ]
        for method, table in run["metrics"].items():
            cells = []
            for m in METRICS:
                v = table.get(m)
                cells.append(f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" if v and np.isfinite(v[0]) else "-")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        f"Wall time per structure (1 CPU thread): extraction with {len(payload['models'])} models "
        f"(energies + forces + features) {payload['extract_s_per_structure'] * 1000:.0f} ms; "
        f"best of 5 batches of {c['structures']}: SevenNet-0 {c['primary_s'] * 1000:.0f} ms, with PROBE's hooks "
        f"{c['primary_with_hooks_s'] * 1000:.0f} ms ({c['hook_overhead']:+.1%}), ensemble of "
        f"{len(c['members_s'])} {c['ensemble_s'] * 1000:.0f} ms; probe fit "
        f"{payload['raw']['fit_seconds']:.0f} s on {payload['n_structures'] // 2} structures.",
        "",
    ]
    return "\n".join(lines)


def sevenn_signal(args):
    torch.set_num_threads(args.threads)
    import sevenn
    from probe_sevenn import SevenNetAdapter

    adapter = SevenNetAdapter(MODELS)
    tag = "" if args.index == ":" else "_" + args.index.replace(":", "-")
    store = STORES / f"sevenn_ethanol{tag}_7net-0_n3.h5"
    timing = store.with_suffix(".timing.json")
    if not store.exists():
        t0 = time.perf_counter()
        extract(adapter, ETHANOL_HELDOUT, store, index=args.index)
        timing.write_text(json.dumps({"extract_seconds": time.perf_counter() - t0}))
    extract_seconds = json.loads(timing.read_text())["extract_seconds"]
    data = load_store(store)
    n = len(data)
    fit_idx, _ = split_holdout(n, 0.5, args.seed)
    raw, raw_table = run_probe(store, "sevenn_ethanol_raw", args.seed)
    shifted, offset = shifted_store(store, fit_idx)
    centred, centred_table = run_probe(shifted, "sevenn_ethanol_offset_removed", args.seed)
    payload = {
        "sevenn": f"sevenn {sevenn.__version__}",
        "models": MODELS,
        "layers": adapter.layers,
        "n_features": adapter.n_features,
        "n_structures": n,
        "seed": args.seed,
        "backbone": backbone_stats(data),
        "offset_eV": offset,
        "raw": raw,
        "offset_removed": centred,
        "extract_s_per_structure": extract_seconds / n,
        "cost": cost(adapter),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sevenn_signal_ethanol.json").write_text(json.dumps(payload, indent=1, default=float))
    print(raw_table, centred_table, sep="\n\n", end="\n\n")
    write_markdown(RESULTS / "sevenn_signal_ethanol.md", markdown(payload))
    return 0


def register(sub):
    s = sub.add_parser(
        "sevenn-signal",
        help="SevenNet-0 as a frozen backbone: PROBE vs ensemble disagreement on ethanol (probe-sevenn's environment)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--index", default=":", help="structures of the data set to use")
    s.set_defaults(handler=sevenn_signal)
