"""The suite's cost table: backbone pass, hooks and ensemble in interleaved rounds, the
probe's inference and training epoch; and ``cost``, which measures a finished run's table
again and rewrites its result files."""

from __future__ import annotations

import json
import time

import numpy as np

from benchmarks.common import CACHE, RESULTS
from benchmarks.report import write_markdown
from benchmarks.suite.page import markdown


def cost_table(adapter, data_path, n=200, rounds=5):
    """Wall times on the same structures: one backbone pass, the same pass with the hooks,
    the ensemble. Interleaved rounds, so that another process on the machine slows all
    three alike; ratios are medians of the per-round ratios, times the per-round minimum."""
    import ase.io

    frames = ase.io.read(data_path, f":{n}")
    primary_only = type(adapter).from_models(adapter.models[:1], layers=adapter.layers)

    def batches(run):
        for i in range(0, len(frames), 32):
            run(frames[i : i + 32])

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
    return {
        "structures": n,
        "rounds": rounds,
        "backbone_seconds": float(plain.min()),
        "backbone_with_hooks_seconds": float(min(times["hooked"])),
        "ensemble_seconds": float(min(times["ensemble"])),
        "n_members": len(adapter.models),
        "hook_overhead_ratio": float(np.median(np.array(times["hooked"]) / plain)),
        "ensemble_ratio": float(np.median(np.array(times["ensemble"]) / plain)),
    }


def measure_cost(adapter, heldout, data, name, fit=None, rounds=5):
    """The cost table: backbone pass, hooks, ensemble (interleaved rounds), the probe's
    inference on the same structures, and (given the energy-median fit's time and epochs)
    a probe epoch on cached features vs one that re-runs the backbone. ``data``: the
    held-out feature store, loaded."""
    from probe_base.artifact import load_probe

    cost = cost_table(adapter, heldout, rounds=rounds)
    probe_path = CACHE / "suite" / f"{name}_energy_median.probe"
    if fit is None or not probe_path.exists():  # no probe fitted by this run
        return cost
    clf = load_probe(probe_path).classifier
    sub = data.subset(np.arange(min(cost["structures"], len(data))))
    clf.predict_proba(sub)  # warm-up
    t0 = time.perf_counter()
    clf.predict_proba(sub)
    cost["probe_seconds"] = time.perf_counter() - t0
    cost["probe_overhead_ratio"] = cost["probe_seconds"] / cost["backbone_seconds"]
    n_fit = len(data) - len(data) // 2
    cost["probe_epoch_seconds_cached_features"] = fit["seconds"] / max(fit["epochs"], 1)
    # the official code re-runs the backbone every epoch: one pass over the fitting half
    cost["backbone_pass_over_fit_set_seconds"] = cost["backbone_seconds"] / cost["structures"] * n_fit
    cost["epoch_speedup_cached_vs_rerun"] = (
        cost["backbone_pass_over_fit_set_seconds"] + cost["probe_epoch_seconds_cached_features"]
    ) / cost["probe_epoch_seconds_cached_features"]
    return cost


def remeasure_cost(backbone, dataset, size, rounds=5):
    """Only the cost table of a finished run, again (e.g. on a quiet machine): same models,
    same cached probe and fit time; the JSON and Markdown are rewritten."""
    from pathlib import Path

    from probe_base.plugins import get_adapter_class
    from probe_base.store import load_store

    name = f"{backbone}_{dataset}" + ("" if size == "small" else f"_{size}")
    payload = json.loads((RESULTS / f"{name}.json").read_text())
    adapter = get_adapter_class(backbone)([Path(m) for m in payload["models"]], layers=payload["layers"])
    where = dataset if size == "small" else f"{dataset}-{size}"
    store = CACHE / "stores" / f"{backbone}_{where}_{Path(payload['models'][0]).stem}_n{len(payload['models'])}.h5"
    payload["cost"] = measure_cost(
        adapter, payload["sets"]["held-out"], load_store(store), name, payload["fits"].get("energy_median"), rounds
    )
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float))
    text = write_markdown(RESULTS / f"{name}.md", markdown(payload), echo=False)
    print(text.split("## Cost")[-1])
    return payload
