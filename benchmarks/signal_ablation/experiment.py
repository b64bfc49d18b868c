"""``signal-ablation``: every recipe x backbone seed x probe seed on one backbone and
dataset, the seed-0 bootstrap intervals and the cost table, written as
``results/signal_<backbone>_<dataset>_<target>[_<tag>].{json,md,png}``."""

from __future__ import annotations

import json

import numpy as np
import torch

from benchmarks.backbones import find_or_train
from benchmarks.common import RESULTS, heldout_path
from benchmarks.report import write_markdown
from benchmarks.signal_ablation.page import markdown, plot
from benchmarks.signal_ablation.recipes import RECIPES, classifier_for, probe_inference_seconds, run_one, summarise
from benchmarks.signal_ablation.stores import stores_for
from benchmarks.suite.cost import cost_table
from probe_base.labels import LabelSpec, errors
from probe_base.report.bootstrap import evaluate_signal
from probe_base.store import load_store


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
