"""Probe cost vs structure size, up to ~10^4 atoms: the self-attention probe (quadratic in
atoms), the pooling probe (linear), and the pooling probe with ``probe fit``'s default
domain test and per-atom error head, against one backbone pass (forces included).

    python -m benchmarks scaling --backbone mace                 # replicated ethanol
    python -m benchmarks scaling --backbone sevenn               # SevenNet-0, periodic NaCl cells

Each size and probe runs in a fresh process (so ``ru_maxrss`` is that run's): one backbone
pass, then the probe on the same structure (after warm-up calls at that size: the first
calls at a new atom count trace and optimise the graph, once per count; the median of
``--repeats`` calls). Times are the process's CPU seconds (one thread; on a shared machine
wall time also counts other processes' turns); wall times are in the JSON. Models and probes are those of ``python -m benchmarks step-cost``
(the suite's architecture; probes fitted on 100 ethanol structures). Writes
``benchmarks/results/scaling_<backbone>.{json,md,png}``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import REPO, RESULTS
from benchmarks.report import write_markdown
from benchmarks.speed.compare import code_tree, environment, python_path
from benchmarks.step_cost.experiment import timing_probes
from benchmarks.step_cost.models import BACKBONES, replicated_ethanol, timing_model

PROBES = ("self", "pooling", "pooling + domain")
DEFAULT_SIZES = {"ethanol": [1, 11, 111, 1111], "nacl": [1, 2, 4, 8, 11]}


def structure(kind, size):
    """``ethanol``: ``size`` molecules on a grid (9 atoms each, no cell); ``nacl``: the
    8-atom rock-salt cell repeated ``size`` times along each axis (periodic)."""
    if kind == "ethanol":
        return replicated_ethanol(size)
    from ase.build import bulk

    cell = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((size, size, size))
    cell.positions += np.random.default_rng(0).normal(0, 0.03, cell.positions.shape)
    return cell


def scaling_one(backbone, model, probe, kind, size, repeats=3):
    """One backbone pass and the probe on one structure, in this (fresh) process."""
    import torch

    from probe_base.artifact import load_probe
    from probe_base.plugins import get_adapter_class
    from probe_base.store import FeatureSet

    torch.set_num_threads(1)
    artifact = load_probe(probe)
    try:  # what predict, evaluate and the calculators call: the network and the domain test
        from probe_base.scoring import score

        def run_probe(X):
            return score(artifact, X)
    except ImportError:  # code before the domain model
        run_probe = artifact.classifier.predict_with_importance
    adapter = get_adapter_class(backbone)([model], layers=artifact.fingerprint["layers"])
    atoms = structure(kind, size)
    small = structure(kind, 1)
    warm = adapter.run([small], compute_forces=True, members=False)
    run_probe(FeatureSet.from_backbone_output(warm, [small]))
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731  MB
    base = rss()
    wall, started = time.perf_counter(), time.process_time()
    out = adapter.run([atoms], compute_forces=True, members=False)
    backbone_seconds, backbone_wall = time.process_time() - started, time.perf_counter() - wall
    after_backbone = rss()
    X = FeatureSet.from_backbone_output(out, [atoms])
    for _ in range(2 if len(atoms) <= 1024 else 1):
        # first calls at a new size: tensor allocations, the traced graph and its optimisation
        # (once per atom count, which an MD run keeps)
        run_probe(X)
    seconds, walls = [], []
    for _ in range(repeats):
        wall, started = time.perf_counter(), time.process_time()
        run_probe(X)
        seconds.append(time.process_time() - started)
        walls.append(time.perf_counter() - wall)
    probe_seconds = float(np.median(seconds))
    return {
        "atoms": len(atoms),
        "backbone_seconds": backbone_seconds,
        "backbone_wall_seconds": backbone_wall,
        "probe_seconds": probe_seconds,
        "probe_seconds_all": seconds,
        "probe_wall_seconds_all": walls,
        "probe_over_backbone": probe_seconds / backbone_seconds,
        "backbone_peak_increase_MB": after_backbone - base,
        "probe_peak_increase_MB": max(rss() - after_backbone, 0.0),
    }


def scaling(args):
    backbone = args.backbone
    kind = args.structures or ("nacl" if backbone == "sevenn" else "ethanol")
    sizes = args.sizes or DEFAULT_SIZES[kind]
    model = timing_model(backbone)
    after = code_tree(args.after)
    probes = timing_probes(backbone, model, after=after)
    rows = []
    for size in sizes:
        row = {}
        for name in PROBES:
            code = (
                f"import json; from benchmarks.scaling import scaling_one; print('RESULT ' + json.dumps("
                f"scaling_one({backbone!r}, {model!r}, {str(probes[name])!r}, {kind!r}, {size}, {args.repeats})))"
            )
            result = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                cwd=after,
                env={
                    **environment(after, plugins=[backbone]),
                    "PYTHONPATH": python_path(after, [backbone]) + os.pathsep + str(REPO),
                },
            )
            if result.returncode:
                raise SystemExit(result.stderr[-3000:])
            one = json.loads(result.stdout.split("RESULT ", 1)[1])
            row["atoms"] = one["atoms"]
            row.setdefault("backbone_seconds_runs", []).append(one["backbone_seconds"])
            row["backbone_peak_increase_MB"] = max(
                row.get("backbone_peak_increase_MB", 0), one["backbone_peak_increase_MB"]
            )
            row[name] = {
                k: one[k]
                for k in (
                    "probe_seconds",
                    "probe_seconds_all",
                    "probe_wall_seconds_all",
                    "probe_peak_increase_MB",
                    "backbone_wall_seconds",
                )
            }
        row["backbone_seconds"] = float(np.median(row["backbone_seconds_runs"]))
        for name in PROBES:
            row[name]["probe_over_backbone"] = row[name]["probe_seconds"] / row["backbone_seconds"]
        rows.append(row)
        print(
            f"{row['atoms']} atoms: backbone {row['backbone_seconds']:.3f} s; "
            + ", ".join(
                f"{n} {row[n]['probe_seconds']:.4f} s ({100 * row[n]['probe_over_backbone']:.1f} %)" for n in PROBES
            ),
            flush=True,
        )
    payload = {
        "backbone": backbone,
        "model": model,
        "structures": kind,
        "threads": 1,
        "command": f"python -m benchmarks scaling --backbone {backbone}",
        "rows": rows,
        "load_average": os.getloadavg(),
    }
    (RESULTS / f"scaling_{backbone}.json").write_text(json.dumps(payload, indent=1))
    what = "replicated ethanol, no cell" if kind == "ethanol" else "periodic rock-salt NaCl supercells"
    lines = [
        f"# Probe cost vs structure size ({backbone}, {what}, 1 thread)",
        "",
        f"`{payload['command']}`; model {os.path.basename(model)}. Probe = one `predict_with_importance` "
        "call (`probe_base.scoring.score`: the network, and the domain test where the probe has one) on the structure's features (median of repeats); backbone = one pass with forces; CPU seconds.",
        "",
        "| atoms | backbone pass (s) | "
        + " | ".join(f"{n} probe (s) | / backbone" for n in PROBES)
        + " | backbone peak +MB | "
        + " | ".join(f"{n} peak +MB" for n in PROBES)
        + " |",
        "|---" * (3 + 3 * len(PROBES)) + "|",
    ]
    for r in rows:
        cells = [f"{r['atoms']}", f"{r['backbone_seconds']:.3f}"]
        cells += [f"{r[n]['probe_seconds']:.4f} | {100 * r[n]['probe_over_backbone']:.2f} %" for n in PROBES]
        cells += [f"{r['backbone_peak_increase_MB']:.0f}"] + [f"{r[n]['probe_peak_increase_MB']:.0f}" for n in PROBES]
        lines.append("| " + " | ".join(cells) + " |")
    write_markdown(RESULTS / f"scaling_{backbone}.md", "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    atoms = [r["atoms"] for r in rows]
    axes[0].loglog(atoms, [r["backbone_seconds"] for r in rows], "ko-", label="backbone pass")
    for name in PROBES:
        axes[0].loglog(atoms, [r[name]["probe_seconds"] for r in rows], "s-", label=f"{name} probe")
        axes[1].semilogx(atoms, [100 * r[name]["probe_over_backbone"] for r in rows], "s-", label=f"{name} probe")
    axes[1].axhline(5, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="atoms", ylabel="seconds", title=f"{backbone}: time per structure")
    axes[1].set(xlabel="atoms", ylabel="probe / backbone pass (%)", ylim=(0, None))
    axes[0].legend(fontsize=8), axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"scaling_{backbone}.png", dpi=120)
    plt.close(fig)
    return payload


def register(sub):
    s = sub.add_parser("scaling", help="probe time and memory vs atoms, self vs pooling probe")
    s.add_argument("--backbone", choices=BACKBONES, default="mace")
    s.add_argument(
        "--structures", choices=list(DEFAULT_SIZES), default=None, help="default: nacl for sevenn, ethanol otherwise"
    )
    s.add_argument(
        "--sizes", nargs="+", type=int, default=None, help="molecules (ethanol) or cell repeats per axis (nacl)"
    )
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--after", default=None, help="git ref of the code to time (default: the working tree)")
    s.set_defaults(handler=scaling)
