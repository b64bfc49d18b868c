"""Does PROBE beat ensemble disagreement on small real data? Recipe ablation + cost.

For each backbone seed k (the probed backbone; the ensemble is all cached seeds, k first),
the held-out DFT set is extracted once (all feature layers, cached and resumable). For each
recipe and probe seed s, the held-out set is split in two halves (split seed s): the probe
fits on one half, and PROBE, ensemble-of-N energy std, latent distance and random are
scored on the other half, on the same structures. Label: total-energy error above the
median error of the fitting half (the official PROBE boundary) unless --target/--threshold.

    python -m benchmarks.signal_ablation --backbone mace --dataset ethanol
    python -m benchmarks.signal_ablation --backbone mace --dataset 3bpa --recipes default paper

Writes benchmarks/results/signal_<backbone>_<dataset>_<target>.json, an .md table and a .png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from probe_base.baselines import LatentDistance
from probe_base.classifier import ProbeClassifier
from probe_base.labels import LabelSpec, errors
from probe_base.metrics import aurc, ece, evaluate_signal
from probe_base.plugins import get_adapter_class
from probe_base.store import extract, load_store
from probe_base.workflow import split_holdout

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CACHE = REPO / "benchmarks" / "cache"
RESULTS = REPO / "benchmarks" / "results"

HELDOUT = {
    "ethanol": DATA / "ethanol" / "test_MD.xyz",
    "3bpa": CACHE / "3bpa_heldout.xyz",  # mixedT configurations not in train_300K (made below)
}

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


def make_3bpa_heldout():
    """train_mixedT configurations that are not in train_300K (300/600/1200 K MD)."""
    import ase.io

    path = HELDOUT["3bpa"]
    if path.exists():
        return path
    train = ase.io.read(DATA / "3bpa" / "train_300K.xyz", ":")
    seen = {np.round(a.positions, 5).tobytes() for a in train}
    mixed = ase.io.read(DATA / "3bpa" / "train_mixedT.xyz", ":")
    keep = [a for a in mixed if np.round(a.positions, 5).tobytes() not in seen]
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, keep)
    return path


def backbone_models(backbone, dataset):
    # one model file per seed: seed1.model (MACE), seed1.nequip.zip (NequIP), seed1.pt ...
    models = sorted(p for p in (CACHE / backbone / dataset).glob("seed[0-9]*") if p.is_file())
    if not models:
        raise SystemExit(f"no {backbone} models in {CACHE / backbone / dataset}: "
                         f"run benchmarks/{backbone}_backbones.py first")
    return models


def stores_for(backbone, dataset, models):
    """One store per probed seed: all layers, every cached model as ensemble member."""
    heldout = make_3bpa_heldout() if dataset == "3bpa" else HELDOUT[dataset]
    adapter_class = get_adapter_class(backbone)
    stores = {}
    for primary in models:
        ordered = [primary] + [m for m in models if m != primary]
        probe_adapter = adapter_class(ordered, layers=[layer.name for layer in adapter_class(ordered[:1]).feature_layers()])
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
    spec = LabelSpec(target, threshold=threshold, quantile=None if threshold else 0.5,
                     remove_offset=remove_offset).resolved_on(fit)
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

    row = {"probe_auroc": roc_auc_score(bad, 1 - p), "probe_aurc": aurc(1 - p, bad),
           "probe_ece": ece(p, 1 - bad), "fit_seconds": fit_seconds, "epochs": epochs,
           "threshold": spec.threshold, "unreliable_fraction": float(bad.mean())}
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
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "ci95": [float(values.mean() - half), float(values.mean() + half)], "n": int(len(values))}


def cost_table(adapter, data_path, n=200, rounds=5):
    """Wall times on the same structures: one backbone pass, the same pass with the hooks,
    the ensemble. Interleaved rounds, so that another process on the machine slows all
    three alike; ratios are medians of the per-round ratios, times the per-round minimum."""
    import ase.io

    frames = ase.io.read(data_path, f":{n}")
    primary_only = type(adapter).from_models(adapter.models[:1], layers=adapter.layers)

    def batches(run):
        for i in range(0, len(frames), 32):
            run(frames[i:i + 32])

    runs = {
        "backbone": lambda: batches(lambda b: primary_only.predict(primary_only.models[0], b, True)),
        "hooked": lambda: batches(lambda b: primary_only.run(b, compute_forces=True, members=False)),
        "ensemble": lambda: batches(lambda b: [adapter.predict(m, b, True) for m in adapter.models]),
    }
    for run in runs.values():
        run()  # warm-up
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    plain = np.array(times["backbone"])
    return {"structures": n, "rounds": rounds, "backbone_seconds": float(plain.min()),
            "backbone_with_hooks_seconds": float(min(times["hooked"])),
            "ensemble_seconds": float(min(times["ensemble"])), "n_members": len(adapter.models),
            "hook_overhead_ratio": float(np.median(np.array(times["hooked"]) / plain)),
            "ensemble_ratio": float(np.median(np.array(times["ensemble"]) / plain))}


def probe_inference_seconds(clf, data, n):
    sub = data.subset(np.arange(min(n, len(data))))
    clf.predict_proba(sub)
    t0 = time.perf_counter()
    clf.predict_proba(sub)
    return time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mace")
    parser.add_argument("--dataset", default="ethanol", choices=sorted(HELDOUT))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--probe-seeds", type=int, default=5)
    parser.add_argument("--target", default="energy")
    parser.add_argument("--threshold", type=float, default=None, help="absolute threshold (default: median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--remove-offset", action="store_true",
                        help="label errors around the fitting half's mean signed error")
    parser.add_argument("--tag", default="", help="suffix of the output files (separate ablation runs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    models = backbone_models(args.backbone, args.dataset)
    stores = stores_for(args.backbone, args.dataset, models)
    loaded = {name: (load_store(path), adapter) for name, (path, adapter) in stores.items()}
    rows = {recipe: [] for recipe in args.recipes}
    backbone_stats = {}
    for name, (data, _) in loaded.items():
        signed = data.energy_pred - data.energy_ref
        backbone_stats[name] = {"energy_mae_meV": 1000 * float(np.abs(signed).mean()),
                                "energy_mean_signed_meV": 1000 * float(signed.mean()),
                                "force_rmse_meV_per_A": 1000 * float(np.sqrt(np.mean(data.force_rmse ** 2)))}
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
        summary[recipe] = {k: summarise(rs, k) for k in
                           ("probe_auroc", "probe_aurc", "probe_ece", "ensemble_auroc", "ensemble_aurc",
                            "ensemble_force_auroc", "ensemble_force_aurc", "latent_auroc", "latent_aurc", "fit_seconds", "epochs")}
        summary[recipe]["win_rate_auroc"] = float(np.mean([r["probe_auroc"] > r.get("ensemble_auroc", np.inf) for r in rs]))
        summary[recipe]["win_rate_aurc"] = float(np.mean([r["probe_aurc"] < r.get("ensemble_aurc", -np.inf) for r in rs]))

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
    heldout = make_3bpa_heldout() if args.dataset == "3bpa" else HELDOUT[args.dataset]
    cost = cost_table(first_adapter, heldout)
    clf = classifier_for(RECIPES[main_recipe][1], 0)
    half = first_data.subset(np.arange(len(first_data) // 2))
    fit_err = errors(half, args.target)
    clf.fit(half, LabelSpec(args.target).resolved(fit_err).reliable(fit_err))
    probe_time = probe_inference_seconds(clf, first_data, cost["structures"])
    epochs = sum(len(h) for h in clf.history_)
    train_seconds = sum(r["fit_seconds"] for r in rows[main_recipe] if r["backbone_seed"] == first_name and r["probe_seed"] == 0)
    backbone_pass_fit_set = cost["backbone_seconds"] / cost["structures"] * len(half)
    cost.update(probe_seconds=probe_time, probe_overhead_ratio=probe_time / cost["backbone_seconds"],
                probe_epoch_seconds=train_seconds / max(epochs, 1),
                probe_epoch_vs_backbone_pass_over_fit_set=(train_seconds / max(epochs, 1)) / backbone_pass_fit_set)

    for rs in rows.values():
        for r in rs:
            r.pop("_scores")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"signal_{args.backbone}_{args.dataset}_{args.target}{'_' + args.tag if args.tag else ''}"
    payload = {"backbone": args.backbone, "dataset": args.dataset, "target": args.target,
               "remove_offset": args.remove_offset,
               "heldout": str(heldout), "n_heldout": len(first_data), "models": [m.name for m in models],
               "backbones": backbone_stats, "summary": summary, "bootstrap_seed0": bootstrap,
               "cost": cost, "runs": rows}
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=float))
    table = markdown(payload)
    (RESULTS / f"{stem}.md").write_text(table)
    plot(payload, RESULTS / f"{stem}.png")
    print(table)


def markdown(payload):
    def fmt(s):
        return "-" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f}"

    offset = ", offset removed" if payload.get("remove_offset") else ""
    lines = [f"### {payload['backbone']} / {payload['dataset']} ({payload['n_heldout']} held-out, "
             f"target {payload['target']}{offset}, {len(payload['models'])} backbone seeds)", "",
             "| backbone | E MAE (meV) | mean signed E error (meV) | F RMSE (meV/Å) |", "|---|---|---|---|"]
    for name, b in payload["backbones"].items():
        lines.append(f"| {name} | {b['energy_mae_meV']:.1f} | {b['energy_mean_signed_meV']:.1f} | {b['force_rmse_meV_per_A']:.1f} |")
    lines += ["", "| recipe | PROBE AUROC | ensemble AUROC | latent AUROC | PROBE AURC | ensemble AURC | PROBE ECE | "
              "AUROC win rate | 95% CI of mean AUROC (PROBE / ensemble) | fit s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for recipe, s in payload["summary"].items():
        ci = (f"[{s['probe_auroc']['ci95'][0]:.3f}, {s['probe_auroc']['ci95'][1]:.3f}] / "
              f"[{s['ensemble_auroc']['ci95'][0]:.3f}, {s['ensemble_auroc']['ci95'][1]:.3f}]"
              if s["ensemble_auroc"] else "-")
        lines.append(f"| {recipe} | {fmt(s['probe_auroc'])} | {fmt(s['ensemble_auroc'])} | {fmt(s['latent_auroc'])} | "
                     f"{fmt(s['probe_aurc'])} | {fmt(s['ensemble_aurc'])} | {fmt(s['probe_ece'])} | "
                     f"{s['win_rate_auroc']:.2f} | {ci} | {s['fit_seconds']['mean']:.1f} |")
    c = payload["cost"]
    lines += ["", f"Cost on {c['structures']} structures (energy+forces, batches of 32, 1 thread): one backbone "
              f"pass {c['backbone_seconds']:.2f} s; with PROBE's hooks ×{c['hook_overhead_ratio']:.3f}; probe "
              f"inference on the captured features ×{c['probe_overhead_ratio']:.3f} of the backbone pass; "
              f"ensemble of {c['n_members']} ×{c['ensemble_ratio']:.2f}; one probe training epoch on cached "
              f"features = ×{c['probe_epoch_vs_backbone_pass_over_fit_set']:.3f} of one backbone pass over the fitting set.", ""]
    return "\n".join(lines)


def plot(payload, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = list(payload["summary"])
    fig, ax = plt.subplots(figsize=(1.2 * len(recipes) + 3, 4))
    x = np.arange(len(recipes))
    for offset, key, label in ((-0.2, "probe_auroc", "PROBE"), (0.0, "ensemble_auroc", "ensemble std"),
                               (0.2, "latent_auroc", "latent distance")):
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


if __name__ == "__main__":
    main()
