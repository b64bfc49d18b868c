"""`probe evaluate` at foundation scale (issue 28): ``--structures`` (10^5) labelled
structures against a domain reference of ``--reference-atoms`` (10^6) atoms, on this
machine's two cores, end to end through the CLI.

The backbone is TinyMLIP (``probe_base/toy.py``, 64 features), trained as in
``reference_scale/``. Its reference: the features of 2000 real EMT Cu clusters
(``probe extract --no-labels``), replicated with 0.1 sigma Gaussian noise to the size asked
(``reference_scale.source.ReplicatedSource``, streamed into ``build_reference``, saved as a
``.reference``). ``probe fit --reference --quantile 0.5`` fits the probe on 2000 other labelled clusters (the
label: worse than their median error; the toy misses any absolute tolerance);
the evaluated store holds ``--structures`` more (EMT labels): in-distribution clusters and
a tenth hot ones (rattle 0.15-0.25 A). Timed: ``probe --threads 2 evaluate`` (FAISS with
two OpenMP threads) with its defaults (baselines, bootstrap, plots), again with ``--bootstrap 0``; and the domain query
alone, the batch novelty with the one-cell settling search (``SETTLED_SHARE``) and without,
with the share of structures whose decision differs (must be 0).

    python -m benchmarks evaluate-scale                  # 10^5 x 10^6 (~40 min the first time)
    python -m benchmarks evaluate-scale --structures 10000 --reference-atoms 100000

Stores, reference and probe are cached in ``benchmarks/cache/evaluate_scale``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent / "cache" / "evaluate_scale"


def _clusters_file(path, n, seed, hot_fraction=0.0):
    import ase.io

    from probe_base import toy

    if path.exists():
        return path
    hot = int(round(n * hot_fraction))
    frames = toy.emt_clusters(n - hot, seed=seed, rattle=(0.02, 0.08))
    if hot:
        frames += toy.emt_clusters(hot, seed=seed + 1, rattle=(0.15, 0.25))
    tmp = path.with_suffix(".partial.xyz")
    ase.io.write(tmp, frames)
    tmp.replace(path)
    return path


def _prepare(args, timings):
    """(reference file, fitting store, evaluated store): built once, cached."""
    import torch

    from benchmarks.reference_scale.source import ReplicatedSource
    from probe_base import toy
    from probe_base.domain.reference_build import build_reference
    from probe_base.store import extract, load_store

    CACHE.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    model = CACHE / "toy.pt"
    if not model.exists():
        train = toy.emt_clusters(120, seed=0, rattle=(0.02, 0.08))
        fitted = toy.train(
            train, [a.get_potential_energy() for a in train], [a.get_forces() for a in train], seed=0, epochs=25
        )
        toy.save_model(fitted, model)
    adapter = toy.ToyAdapter([model])
    stores = {}
    for name, n, seed, hot, labels in (
        ("reference", 2000, 10, 0.0, False),
        ("fit", 2000, 20, 0.0, True),
        ("evaluated", args.structures, 30, 0.1, True),
    ):
        store = CACHE / f"{name}_{n}.h5"
        if not store.exists():
            start = time.perf_counter()
            xyz = _clusters_file(CACHE / f"{name}_{n}.xyz", n, seed, hot)
            extract(adapter, xyz, store, labels=labels, progress=True, batch_size=64)
            timings[f"extract_{name}_seconds"] = time.perf_counter() - start
        stores[name] = store
    reference = CACHE / f"train_{args.reference_atoms}.reference"
    if not reference.exists():
        real = load_store(stores["reference"])
        counts = np.diff(real.offsets)
        source = ReplicatedSource(
            real.features, real.atomic_numbers, np.asarray(real.energy_pred), counts, args.reference_atoms, 0.1
        )
        source.fingerprint = real.fingerprint  # the replicas stand for more of this backbone's atoms
        start = time.perf_counter()
        build_reference(source, progress=True).save(reference)
        timings["reference_build_seconds"] = time.perf_counter() - start
    return reference, stores["fit"], stores["evaluated"]


def _cli(*argv, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "probe_base.cli", "--threads", str(threads), *argv], check=True, env=env)
    return time.perf_counter() - start


def _domain_only(probe_path, store_path, threads):
    """Batch novelty of the evaluated store: with the settling search and without."""
    import faiss

    from probe_base.artifact import load_probe
    from probe_base.domain import model as domain_module
    from probe_base.store import load_store

    faiss.omp_set_num_threads(threads)
    domain = load_probe(probe_path).domain
    data = load_store(store_path)
    out = {}
    for name, share in (("settled", domain_module.SETTLED_SHARE), ("full search", 0.0)):
        saved, domain_module.SETTLED_SHARE = domain_module.SETTLED_SHARE, share
        try:
            start = time.perf_counter()
            structure, _ = domain.novelty(data)
            out[name] = {"seconds": time.perf_counter() - start, "novelty": structure}
        finally:
            domain_module.SETTLED_SHARE = saved
    a, b = out["settled"]["novelty"] > 1.0, out["full search"]["novelty"] > 1.0
    return {
        "atoms": int(data.offsets[-1]),
        "kinds": sorted({ix.kind for ix in domain.reference_.values()}),
        "nprobe": {int(z): ix.params.get("nprobe") for z, ix in domain.reference_.items()},
        "seconds": {k: v["seconds"] for k, v in out.items()},
        "flagged_share": {k: float(np.mean(v["novelty"] > 1.0)) for k, v in out.items()},
        "decisions_differ_share": float(np.mean(a != b)),
    }


def _fit_store_found(probe_path) -> bool:
    from probe_base.artifact import load_probe

    return Path(load_probe(probe_path).info["info"].get("fit_store", "")).exists()


def run(args):
    timings = {}
    reference, fit_store, evaluated = _prepare(args, timings)
    probe = CACHE / f"probe_{args.reference_atoms}.probe"
    if probe.exists() and not _fit_store_found(probe):
        probe.unlink()  # evaluate would skip the baselines (they need the fitting store): refit here
    if not probe.exists():
        timings["probe_fit_seconds"] = _cli(
            "fit",
            "--store",
            str(fit_store),
            "--reference",
            str(reference),
            "--output",
            str(probe),
            # TinyMLIP misses an absolute tolerance everywhere: a relative label (the cost is the same)
            "--quantile",
            "0.5",
            threads=2,
        )
    out_dir = CACHE / f"evaluate_{args.structures}"
    evaluate_seconds = _cli(
        "evaluate",
        "--probe",
        str(probe),
        "--store",
        str(evaluated),
        "--output-dir",
        str(out_dir),
        threads=2,
    )
    # the same without the bootstrap intervals (1000 resamples of every signal by default)
    no_bootstrap_seconds = _cli(
        "evaluate",
        "--probe",
        str(probe),
        "--store",
        str(evaluated),
        "--output-dir",
        str(CACHE / f"evaluate_{args.structures}_no_bootstrap"),
        "--bootstrap",
        "0",
        threads=2,
    )
    domain = _domain_only(probe, evaluated, threads=2)
    payload = {
        "experiment": "evaluate_scale",
        "command": f"python -m benchmarks evaluate-scale --structures {args.structures} "
        f"--reference-atoms {args.reference_atoms}",
        "structures": args.structures,
        "reference_atoms": args.reference_atoms,
        "threads": 2,
        "load_average_at_end": list(os.getloadavg()),
        "probe_evaluate_seconds": evaluate_seconds,
        "probe_evaluate_no_bootstrap_seconds": no_bootstrap_seconds,
        "target_seconds": 60.0,
        "domain_query": domain,
        "preparation_seconds": timings,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "evaluate_scale.json").write_text(json.dumps(payload, indent=1))
    s, f = domain["seconds"], domain["flagged_share"]
    lines = [
        "# `probe evaluate` at scale (benchmarks/evaluate_scale.py)",
        "",
        f"`{payload['command']}`: TinyMLIP features; {args.structures} labelled EMT Cu clusters "
        f"({domain['atoms']} atoms, a tenth hot) against a {args.reference_atoms}-atom reference "
        f"({', '.join(domain['kinds'])}, nprobe {domain['nprobe']}); two threads on a 2-core machine "
        f"(load average at the end {payload['load_average_at_end'][0]:.1f}).",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| `probe --threads 2 evaluate` (defaults: baselines, bootstrap, plots), end to end | {evaluate_seconds:.1f} |",
        f"| the same with `--bootstrap 0` (no intervals) | {no_bootstrap_seconds:.1f} |",
        f"| the domain query alone, settling search (one cell first) | {s['settled']:.1f} |",
        f"| the domain query alone, full search for every atom | {s['full search']:.1f} |",
        "",
        f"Structures flagged outside the domain: {100 * f['settled']:.2f} % settled, {100 * f['full search']:.2f} % "
        f"full search; decisions that differ: {100 * domain['decisions_differ_share']:.3f} %.",
    ]
    (RESULTS / "evaluate_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def register(sub):
    s = sub.add_parser("evaluate-scale", help="`probe evaluate` of 10^5 structures against a 10^6-atom reference")
    s.add_argument("--structures", type=int, default=100_000)
    s.add_argument("--reference-atoms", type=int, default=1_000_000)
    s.set_defaults(handler=run)
