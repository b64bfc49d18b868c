"""Pooling attention (learned queries, linear in atoms) vs self-attention among all atoms:
AUROC paired on the same splits, and cost (issue 18).

For each store and split seed: the store is split in halves (``split_holdout``, as
``probe fit --eval-fraction 0.5``), both probes are fitted on the same half with the same
seed and scored on the other; the paired difference of held-out AUROC is summarised over
seeds (mean and a t interval).

    python -m benchmarks attention --stores toy           # core environment
    python -m benchmarks attention --stores mace-ethanol mace-demo   # mace environment
    python -m benchmarks attention --stores aimnet-xtb-ethanol      # the OOD benchmark's stores

Stores: ``toy`` (800 EMT copper clusters, the toy backbone), ``mace-ethanol`` (the 1000
DFT ethanol structures of test_MD.xyz read by the suite's MACE seed 1, trained if missing),
``mace-demo`` (the 600 held-out EMT clusters of ``probe demo`` read by the shipped MACE
example member 0). Writes ``benchmarks/results/attention_<store>.{json,md}``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks.backbones import find_or_train
from benchmarks.common import CACHE, ETHANOL_HELDOUT, RESULTS
from benchmarks.report import write_markdown
from benchmarks.speed.toy_store import toy_store
from probe_base.net.model import ATTENTIONS

LABELS = {
    "energy_median": dict(target="energy", quantile=0.5),
    "force_rmse_median": dict(target="force_rmse", quantile=0.5),
}


XTB_STORES = {f"{b}-xtb-ethanol": b for b in ("mace", "nequip", "aimnet")}


def store_path(name) -> Path:
    if name == "toy":
        return toy_store(800, with_probe=False)[0]
    if name in XTB_STORES:  # the OOD benchmark's held-out xTB-labelled ethanol (seed 1 backbone)
        from benchmarks.ood_data.layout import STORES

        path = STORES / f"{XTB_STORES[name]}_heldout.h5"
        if not path.exists():
            raise SystemExit(
                f"{path} is missing: run `python -m benchmarks ood-data --backbone "
                f"{XTB_STORES[name]} --stage all` first"
            )
        return path
    from probe_base.store import extract

    folder = CACHE / "attention"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.h5"
    if path.exists():
        return path
    from probe_mace import MACEAdapter

    if name == "mace-ethanol":
        model = find_or_train("mace", "ethanol", seeds=(1,), evaluate=False)[0]  # the suite's seed 1
        extract(MACEAdapter([model]), ETHANOL_HELDOUT, path, progress=False)
    elif name == "mace-demo":
        from probe_mace.example import example_models

        from probe_base.demo import demo_data

        data = demo_data(folder)
        models = example_models(data["train"], folder / "demo_models", 1)
        extract(MACEAdapter(models), data["heldout"], path, progress=False)
    else:
        raise SystemExit(f"unknown store {name!r}")
    return path


def paired_run(store, label_name, seed, n_eval_timing=200):
    """Both probes on one split: held-out AUROC, fit seconds, inference seconds."""
    import torch
    from sklearn.metrics import roc_auc_score

    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.store import load_store
    from probe_base.workflow.fit import split_holdout

    torch.set_num_threads(1)
    data = load_store(store)
    fit_idx, eval_idx = split_holdout(len(data), 0.5, seed)
    fit_data, eval_data = data.subset(fit_idx), data.subset(eval_idx)
    label = LabelSpec(**LABELS[label_name]).resolved_on(fit_data)
    y = label.reliable(label.errors(fit_data))
    unreliable = 1 - label.reliable(label.errors(eval_data))
    row = {"seed": seed, "label": label_name, "n_fit": len(fit_idx), "n_eval": len(eval_idx)}
    for attention in ATTENTIONS:
        started = time.perf_counter()
        clf = ProbeClassifier(seed=seed, attention=attention).fit(fit_data, y)
        row[f"{attention}_fit_seconds"] = time.perf_counter() - started
        p = clf.predict_proba(eval_data)[:, 1]
        row[f"{attention}_auroc"] = float(roc_auc_score(unreliable, 1 - p))
        row[f"{attention}_epochs"] = [len(h) for h in clf.history_]
        timing = eval_data.subset(np.arange(min(n_eval_timing, len(eval_data))))
        started = time.perf_counter()
        for i in range(len(timing)):  # one structure at a time, as a calculator scores
            clf.predict_with_importance(timing.subset([i]))
        row[f"{attention}_ms_per_structure"] = 1000 * (time.perf_counter() - started) / len(timing)
    row["difference"] = row["pooling_auroc"] - row["self_auroc"]
    print(
        f"  {label_name} seed {seed}: self {row['self_auroc']:.3f}, pooling {row['pooling_auroc']:.3f} "
        f"({row['difference']:+.3f}); fit {row['self_fit_seconds']:.0f} / {row['pooling_fit_seconds']:.0f} s",
        flush=True,
    )
    return row


def summarise(rows):
    from scipy import stats

    diffs = np.array([r["difference"] for r in rows])
    half = stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else np.nan
    return {
        "n_splits": len(rows),
        "self_auroc_mean": float(np.mean([r["self_auroc"] for r in rows])),
        "pooling_auroc_mean": float(np.mean([r["pooling_auroc"] for r in rows])),
        "difference_mean": float(diffs.mean()),
        "difference_ci95": [float(diffs.mean() - half), float(diffs.mean() + half)],
        "pooling_not_worse_splits": int(np.sum(diffs >= 0)),
        "self_ms_per_structure": float(np.median([r["self_ms_per_structure"] for r in rows])),
        "pooling_ms_per_structure": float(np.median([r["pooling_ms_per_structure"] for r in rows])),
        "self_fit_seconds": float(np.median([r["self_fit_seconds"] for r in rows])),
        "pooling_fit_seconds": float(np.median([r["pooling_fit_seconds"] for r in rows])),
    }


def attention(args):
    for name in args.stores:
        store = store_path(name)
        print(f"{name}: {store}", flush=True)
        rows = [paired_run(store, label, seed) for label in args.labels for seed in range(args.seeds)]
        payload = {
            "store": name,
            "command": f"python -m benchmarks attention --stores {name} "
            f"--seeds {args.seeds} --labels {' '.join(args.labels)}",
            "rows": rows,
            "summary": {label: summarise([r for r in rows if r["label"] == label]) for label in args.labels},
        }
        (RESULTS / f"attention_{name}.json").write_text(json.dumps(payload, indent=1))
        lines = [
            f"# Pooling vs self-attention probe: {name}",
            "",
            f"`{payload['command']}`: same "
            "halves, same seed, held-out AUROC of detecting unreliable structures; 1 thread.",
            "",
            "| label | splits | self AUROC | pooling AUROC | pooling - self (95 % CI) | pooling >= self | "
            "ms/structure self | pooling | fit s self | pooling |",
            "|---" * 10 + "|",
        ]
        for label, s in payload["summary"].items():
            lo, hi = s["difference_ci95"]
            lines.append(
                f"| {label} | {s['n_splits']} | {s['self_auroc_mean']:.3f} | {s['pooling_auroc_mean']:.3f} | "
                f"{s['difference_mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] | {s['pooling_not_worse_splits']}/{s['n_splits']} | "
                f"{s['self_ms_per_structure']:.2f} | {s['pooling_ms_per_structure']:.2f} | "
                f"{s['self_fit_seconds']:.0f} | {s['pooling_fit_seconds']:.0f} |"
            )
        write_markdown(RESULTS / f"attention_{name}.md", "\n".join(lines) + "\n")


def register(sub):
    s = sub.add_parser("attention", help="pooling vs self-attention probe: paired AUROC and cost")
    s.add_argument("--stores", nargs="+", default=["toy"], choices=["toy", "mace-ethanol", "mace-demo", *XTB_STORES])
    s.add_argument("--seeds", type=int, default=5, help="split seeds (paired runs per label)")
    s.add_argument("--labels", nargs="+", default=["energy_median"], choices=list(LABELS))
    s.set_defaults(handler=attention)
