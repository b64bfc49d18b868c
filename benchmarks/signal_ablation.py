"""Does PROBE beat ensemble disagreement on small real data? Recipe ablation + cost.

For each backbone seed k (the probed backbone; the ensemble is all cached seeds, k first),
the held-out DFT set is extracted once (all feature layers, cached and resumable). For each
recipe and probe seed s, the held-out set is split in two halves (split seed s): the probe
fits on one half, and PROBE, ensemble-of-N energy std, latent distance and random are
scored on the other half, on the same structures. Label: total-energy error above the
median error of the fitting half (the official PROBE boundary) unless --target/--threshold.

    python -m benchmarks signal-ablation --backbone mace --dataset ethanol
    python -m benchmarks signal-ablation --backbone mace --dataset 3bpa --recipes default paper
    (``python -m benchmarks.signal_ablation ...`` runs the same command)
    python -m benchmarks ablation-table       # results/ablation.md from every signal_*.json
    python -m benchmarks ablation-table --bootstrap benchmarks/results/signal_aimnet_ethanol_energy_main.json

Writes benchmarks/results/signal_<backbone>_<dataset>_<target>[_<tag>].json, an .md table and
a .png; ``ablation-table`` writes benchmarks/results/ablation.md (every run: recipe x dataset,
mean ± std over backbone seeds x probe seeds, the 95 % CI of the mean for PROBE and the
ensemble-of-N energy std, the paired difference per run with its 95 % CI), and with
``--bootstrap`` one run's per-seed bootstrap intervals (``<run>_bootstrap.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.backbones import find_or_train
from benchmarks.common import CACHE, DATASETS, RESULTS, heldout_path
from benchmarks.report import table, write_markdown
from benchmarks.suite import cost_table
from probe_base.labels import LabelSpec, errors
from probe_base.net.classifier import ProbeClassifier
from probe_base.plugins import get_adapter_class
from probe_base.report.baselines import LatentDistance
from probe_base.report.metrics import aurc, ece, evaluate_signal
from probe_base.store import extract, load_store
from probe_base.workflow.fit import split_holdout

# name -> (which layers: "last" | "all", classifier parameters)
RECIPES = {
    "paper": ("last", dict(preset="paper")),
    "default": ("all", dict()),
    "default-last-layer": ("last", dict()),
    "single-split": ("all", dict(cv_folds=1)),
    "no-element-identity": ("all", dict(element_embedding=False)),
    "per-element-norm": ("all", dict(per_element_norm=True)),
    "+latent-distance": ("all", dict(extras=("energy_per_atom", "log_n_atoms", "latent_distance"))),
    "no-energy-input": ("all", dict(extras=("log_n_atoms",))),
}


def stores_for(backbone, dataset, models):
    """One store per probed seed: all layers, every cached model as ensemble member."""
    heldout = heldout_path(dataset)
    adapter_class = get_adapter_class(backbone)
    stores = {}
    for primary in models:
        ordered = [primary] + [m for m in models if m != primary]
        probe_adapter = adapter_class(
            ordered, layers=[layer.name for layer in adapter_class(ordered[:1]).feature_layers()]
        )
        path = CACHE / "stores" / f"{backbone}_{dataset}_{primary.stem}_n{len(models)}.h5"
        extract(probe_adapter, heldout, path)
        stores[primary.stem] = (path, probe_adapter)
    return stores


def last_layer_columns(adapter):
    end = int(np.sum(adapter.widths))
    return np.arange(end - adapter.widths[-1], end)


def classifier_for(params, seed):
    params = dict(params)
    preset = params.pop("preset", None)
    if preset:
        return ProbeClassifier.from_preset(preset, seed=seed, **params)
    return ProbeClassifier(seed=seed, **params)


def run_one(data, adapter, layers, params, split_seed, target, threshold, remove_offset=False):
    fit_idx, eval_idx = split_holdout(len(data), 0.5, split_seed)
    view = data
    if layers == "last":
        view = dataclasses.replace(data, features=np.ascontiguousarray(data.features[:, last_layer_columns(adapter)]))
    fit, ev = view.subset(fit_idx), view.subset(eval_idx)
    spec = LabelSpec(
        target, threshold=threshold, quantile=None if threshold else 0.5, remove_offset=remove_offset
    ).resolved_on(fit)
    fit_err = spec.errors(fit)
    y = spec.reliable(fit_err)
    ev_err = spec.errors(ev)
    bad = (ev_err > spec.threshold).astype(int)
    t0 = time.perf_counter()
    clf = classifier_for(params, split_seed).fit(fit, y)
    fit_seconds = time.perf_counter() - t0
    epochs = sum(len(h) for h in clf.history_)
    p = clf.predict_proba(ev)[:, 1]
    from sklearn.metrics import roc_auc_score

    row = {
        "probe_auroc": roc_auc_score(bad, 1 - p),
        "probe_aurc": aurc(1 - p, bad),
        "probe_ece": ece(p, 1 - bad),
        "fit_seconds": fit_seconds,
        "epochs": epochs,
        "threshold": spec.threshold,
        "unreliable_fraction": float(bad.mean()),
    }
    if ev.member_energies is not None:
        s = ev.member_energies.std(1)
        row.update(ensemble_auroc=roc_auc_score(bad, s), ensemble_aurc=aurc(s, bad))
    if ev.member_force_std is not None:  # the natural baseline for force labels
        f = ev.member_force_std
        row.update(ensemble_force_auroc=roc_auc_score(bad, f), ensemble_force_aurc=aurc(f, bad))
    d = LatentDistance().fit(fit).distance(ev)
    row.update(latent_auroc=roc_auc_score(bad, d), latent_aurc=aurc(d, bad))
    row["_scores"] = (1 - p, bad, ev_err, p, ev.member_energies.std(1) if ev.member_energies is not None else None)
    return row


def summarise(rows, key):
    values = np.array([r[key] for r in rows if key in r])
    if not len(values):
        return None
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "ci95": [float(values.mean() - half), float(values.mean() + half)],
        "n": int(len(values)),
    }


def probe_inference_seconds(clf, data, n):
    sub = data.subset(np.arange(min(n, len(data))))
    clf.predict_proba(sub)
    t0 = time.perf_counter()
    clf.predict_proba(sub)
    return time.perf_counter() - t0


def signal_ablation(args):
    torch.set_num_threads(args.threads)

    models = find_or_train(args.backbone, args.dataset, train=False)
    stores = stores_for(args.backbone, args.dataset, models)
    loaded = {name: (load_store(path), adapter) for name, (path, adapter) in stores.items()}
    rows = {recipe: [] for recipe in args.recipes}
    backbone_stats = {}
    for name, (data, _) in loaded.items():
        signed = data.energy_pred - data.energy_ref
        backbone_stats[name] = {
            "energy_mae_meV": 1000 * float(np.abs(signed).mean()),
            "energy_mean_signed_meV": 1000 * float(signed.mean()),
            "force_rmse_meV_per_A": 1000 * float(np.sqrt(np.mean(data.force_rmse**2))),
        }
    from tqdm.auto import tqdm

    jobs = [(r, n, s) for r in args.recipes for n in loaded for s in range(args.probe_seeds)]
    for recipe, name, seed in tqdm(jobs, desc=f"{args.backbone}/{args.dataset} probe fits"):
        data, adapter = loaded[name]
        layers, params = RECIPES[recipe]
        row = run_one(data, adapter, layers, params, seed, args.target, args.threshold, args.remove_offset)
        row.update(recipe=recipe, backbone_seed=name, probe_seed=seed)
        rows[recipe].append(row)

    summary = {}
    for recipe, rs in rows.items():
        summary[recipe] = {
            k: summarise(rs, k)
            for k in (
                "probe_auroc",
                "probe_aurc",
                "probe_ece",
                "ensemble_auroc",
                "ensemble_aurc",
                "ensemble_force_auroc",
                "ensemble_force_aurc",
                "latent_auroc",
                "latent_aurc",
                "fit_seconds",
                "epochs",
            )
        }
        summary[recipe]["win_rate_auroc"] = float(
            np.mean([r["probe_auroc"] > r.get("ensemble_auroc", np.inf) for r in rs])
        )
        summary[recipe]["win_rate_aurc"] = float(
            np.mean([r["probe_aurc"] < r.get("ensemble_aurc", -np.inf) for r in rs])
        )

    # one representative run per backbone seed with bootstrap intervals (default recipe if run)
    main_recipe = "default" if "default" in rows else args.recipes[0]
    bootstrap = {}
    for r in rows[main_recipe]:
        if r["probe_seed"] != 0:
            continue
        risk, bad, err, p, ens = r["_scores"]
        bootstrap[r["backbone_seed"]] = {"PROBE": evaluate_signal(risk, bad, err, p, n_bootstrap=500)}
        if ens is not None:
            bootstrap[r["backbone_seed"]]["ensemble E std"] = evaluate_signal(ens, bad, err, n_bootstrap=500)

    first_name, (first_data, first_adapter) = next(iter(loaded.items()))
    heldout = heldout_path(args.dataset)
    cost = cost_table(first_adapter, heldout)
    clf = classifier_for(RECIPES[main_recipe][1], 0)
    half = first_data.subset(np.arange(len(first_data) // 2))
    fit_err = errors(half, args.target)
    clf.fit(half, LabelSpec(args.target).resolved(fit_err).reliable(fit_err))
    probe_time = probe_inference_seconds(clf, first_data, cost["structures"])
    epochs = sum(len(h) for h in clf.history_)
    train_seconds = sum(
        r["fit_seconds"] for r in rows[main_recipe] if r["backbone_seed"] == first_name and r["probe_seed"] == 0
    )
    backbone_pass_fit_set = cost["backbone_seconds"] / cost["structures"] * len(half)
    cost.update(
        probe_seconds=probe_time,
        probe_overhead_ratio=probe_time / cost["backbone_seconds"],
        probe_epoch_seconds=train_seconds / max(epochs, 1),
        probe_epoch_vs_backbone_pass_over_fit_set=(train_seconds / max(epochs, 1)) / backbone_pass_fit_set,
    )

    for rs in rows.values():
        for r in rs:
            r.pop("_scores")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"signal_{args.backbone}_{args.dataset}_{args.target}{'_' + args.tag if args.tag else ''}"
    payload = {
        "backbone": args.backbone,
        "dataset": args.dataset,
        "target": args.target,
        "remove_offset": args.remove_offset,
        "heldout": str(heldout),
        "n_heldout": len(first_data),
        "models": [m.name for m in models],
        "backbones": backbone_stats,
        "summary": summary,
        "bootstrap_seed0": bootstrap,
        "cost": cost,
        "runs": rows,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=float))
    write_markdown(RESULTS / f"{stem}.md", markdown(payload))
    plot(payload, RESULTS / f"{stem}.png")
    return 0


def markdown(payload):
    def fmt(s):
        return "-" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f}"

    offset = ", offset removed" if payload.get("remove_offset") else ""
    lines = [
        f"### {payload['backbone']} / {payload['dataset']} ({payload['n_heldout']} held-out, "
        f"target {payload['target']}{offset}, {len(payload['models'])} backbone seeds)",
        "",
        "| backbone | E MAE (meV) | mean signed E error (meV) | F RMSE (meV/Å) |",
        "|---|---|---|---|",
    ]
    for name, b in payload["backbones"].items():
        lines.append(
            f"| {name} | {b['energy_mae_meV']:.1f} | {b['energy_mean_signed_meV']:.1f} | {b['force_rmse_meV_per_A']:.1f} |"
        )
    lines += [
        "",
        "| recipe | PROBE AUROC | ensemble AUROC | latent AUROC | PROBE AURC | ensemble AURC | PROBE ECE | "
        "AUROC win rate | 95% CI of mean AUROC (PROBE / ensemble) | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe, s in payload["summary"].items():
        ci = (
            f"[{s['probe_auroc']['ci95'][0]:.3f}, {s['probe_auroc']['ci95'][1]:.3f}] / "
            f"[{s['ensemble_auroc']['ci95'][0]:.3f}, {s['ensemble_auroc']['ci95'][1]:.3f}]"
            if s["ensemble_auroc"]
            else "-"
        )
        lines.append(
            f"| {recipe} | {fmt(s['probe_auroc'])} | {fmt(s['ensemble_auroc'])} | {fmt(s['latent_auroc'])} | "
            f"{fmt(s['probe_aurc'])} | {fmt(s['ensemble_aurc'])} | {fmt(s['probe_ece'])} | "
            f"{s['win_rate_auroc']:.2f} | {ci} | {s['fit_seconds']['mean']:.1f} |"
        )
    c = payload["cost"]
    lines += [
        "",
        f"Cost on {c['structures']} structures (energy+forces, batches of 32, 1 thread): one backbone "
        f"pass {c['backbone_seconds']:.2f} s; with PROBE's hooks ×{c['hook_overhead_ratio']:.3f}; probe "
        f"inference on the captured features ×{c['probe_overhead_ratio']:.3f} of the backbone pass; "
        f"ensemble of {c['n_members']} ×{c['ensemble_ratio']:.2f}; one probe training epoch on cached "
        f"features = ×{c['probe_epoch_vs_backbone_pass_over_fit_set']:.3f} of one backbone pass over the fitting set.",
        "",
    ]
    return "\n".join(lines)


def plot(payload, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = list(payload["summary"])
    fig, ax = plt.subplots(figsize=(1.2 * len(recipes) + 3, 4))
    x = np.arange(len(recipes))
    for offset, key, label in (
        (-0.2, "probe_auroc", "PROBE"),
        (0.0, "ensemble_auroc", "ensemble std"),
        (0.2, "latent_auroc", "latent distance"),
    ):
        means = [payload["summary"][r][key]["mean"] if payload["summary"][r][key] else np.nan for r in recipes]
        stds = [payload["summary"][r][key]["std"] if payload["summary"][r][key] else 0 for r in recipes]
        ax.errorbar(x + offset, means, yerr=stds, fmt="o", capsize=3, label=label)
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_xticks(x, recipes, rotation=30, ha="right")
    ax.set_ylabel("AUROC (unreliable detection), mean ± std")
    ax.set_title(f"{payload['backbone']} / {payload['dataset']}: PROBE recipes vs ensemble")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- the tables of every run ---------------------------------------------------------------
def _mean_std(s, ci=False):
    if not s:
        return "-"
    text = f"{s['mean']:.3f} ± {s['std']:.3f}"
    return text + (f" [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" if ci else "")


def _paired(rows, a, b):
    """Mean of (a - b) over runs on the same structures, with its 95 % CI."""
    d = np.array([r[a] - r[b] for r in rows if a in r and b in r])
    if len(d) < 2:
        return "-"
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"


def ablation_table(results=RESULTS) -> str:
    """results/ablation.md: every signal_*.json, one row per backbone x dataset x label x recipe."""
    header = [
        "backbone",
        "dataset",
        "label",
        "recipe",
        "runs",
        "PROBE AUROC [95% CI]",
        "ensemble AUROC [95% CI]",
        "latent AUROC",
        "PROBE AURC [95% CI]",
        "ensemble AURC [95% CI]",
        "PROBE ECE",
        "win rate AUROC / AURC",
        "paired ΔAUROC (PROBE − ens.)",
        "paired ΔAURC (PROBE − ens.)",
    ]
    rows = []
    for path in sorted(results.glob("signal_*.json")):
        payload = json.loads(path.read_text())
        label = payload["target"] + (" (offset removed)" if payload.get("remove_offset") else "") + ", median"
        for recipe, s in payload["summary"].items():
            runs = payload["runs"][recipe]
            rows.append(
                [
                    payload["backbone"],
                    payload["dataset"],
                    label,
                    recipe,
                    s["probe_auroc"]["n"],
                    _mean_std(s["probe_auroc"], True),
                    _mean_std(s["ensemble_auroc"], True),
                    _mean_std(s["latent_auroc"]),
                    _mean_std(s["probe_aurc"], True),
                    _mean_std(s["ensemble_aurc"], True),
                    _mean_std(s["probe_ece"]),
                    f"{s['win_rate_auroc']:.2f} / {s['win_rate_aurc']:.2f}",
                    _paired(runs, "probe_auroc", "ensemble_auroc"),
                    _paired(runs, "probe_aurc", "ensemble_aurc"),
                ]
            )
    return write_markdown(results / "ablation.md", "\n".join(table(header, rows)) + "\n")


def bootstrap_table(json_path: Path) -> Path:
    """``<run>_bootstrap.md`` next to a signal-ablation JSON: per backbone seed (probe seed 0,
    default recipe), AUROC, AURC, Spearman and ECE with 95 % bootstrap intervals."""
    payload = json.loads(Path(json_path).read_text())
    rows = []
    for seed, signals in payload["bootstrap_seed0"].items():
        for signal, metrics in signals.items():
            cells = []
            for key in ("auroc", "aurc", "spearman", "ece"):
                if key in metrics:
                    value, low, high = metrics[key]
                    cells.append(f"{value:.3f} [{low:.3f}, {high:.3f}]")
                else:
                    cells.append("—")
            rows.append([seed, signal, *cells])
    lines = [
        f"### {payload['backbone']} / {payload['dataset']}: bootstrap 95 % intervals "
        f"(probe seed 0, {payload['n_heldout']} held-out, half scored)",
        "",
        *table(["backbone", "signal", "AUROC", "AURC", "Spearman", "ECE"], rows),
    ]
    out = Path(json_path).with_name(Path(json_path).stem + "_bootstrap.md")
    write_markdown(out, "\n".join(lines) + "\n")
    return out


def ablation_table_command(args):
    if args.bootstrap:
        bootstrap_table(args.bootstrap)
    else:
        ablation_table()
    return 0


def register(sub):
    s = sub.add_parser(
        "signal-ablation",
        help="PROBE recipes vs ensemble disagreement over backbone x probe seeds, and the cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--backbone", default="mace")
    s.add_argument("--dataset", default="ethanol", choices=DATASETS)
    s.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    s.add_argument("--probe-seeds", type=int, default=5)
    s.add_argument("--target", default="energy")
    s.add_argument("--threshold", type=float, default=None, help="absolute threshold (default: median)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument(
        "--remove-offset", action="store_true", help="label errors around the fitting half's mean signed error"
    )
    s.add_argument("--tag", default="", help="suffix of the output files (separate ablation runs)")
    s.set_defaults(handler=signal_ablation)
    t = sub.add_parser("ablation-table", help="results/ablation.md from every signal-ablation run")
    t.add_argument(
        "--bootstrap",
        type=Path,
        default=None,
        metavar="JSON",
        help="instead, one run's per-seed bootstrap intervals (<run>_bootstrap.md)",
    )
    t.set_defaults(handler=ablation_table_command)


if __name__ == "__main__":  # probe_plugins/nequip/README.md quotes `python -m benchmarks.signal_ablation ...`
    import sys

    from benchmarks.__main__ import main

    sys.exit(main(["signal-ablation", *sys.argv[1:]]))
