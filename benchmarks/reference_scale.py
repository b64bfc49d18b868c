"""The domain's reference at scale (issue 28): per-element FAISS index build time, memory
per reference atom, recall@5 against exact k-NN, query time per atom and per MD step, at
10^4 to 10^7 reference atoms; the domain test's false-alarm and OOD flag rates with the
exact and the approximate index side by side.

    python -m benchmarks reference-scale                     # 10^4 .. 10^7 (~30 min, ~3 GB)
    python -m benchmarks reference-scale --sizes 10000 100000

Features: TinyMLIP (``probe_base/toy.py``, 64 features: two interaction blocks of 32),
trained on 120 EMT Cu clusters, read on ``--base`` real EMT Cu clusters (13/19/38 atoms,
rattle 0.02-0.08 A). A reference of n atoms: n <= the real atoms, the first n real atoms;
larger, real atom ``i mod n_real`` plus Gaussian noise of ``--noise`` x each feature's
standard deviation, generated chunk by chunk from a seeded generator (never held whole),
so the 10^7 reference is the real atoms replicated ~200x with noise. Structures for the
range test: the real clusters' energies and atom counts.

Calibration (ID, 300 structures), test ID (1000) and three OOD sets (300 each: hot,
rattle 0.15-0.25 A; strained, x1.06-1.10; vacancy + rattle 0.08-0.12) are other EMT
clusters read by the same backbone.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (10**4, 10**5, 10**6, 10**7)


def _features(model, frames):
    """(features (atoms, 64), atomic numbers, offsets, energies) of ``frames``."""
    import torch

    from probe_base.toy import batch_tensors

    layers = [model.get_submodule(f"interactions.{i}") for i in range(model.config["n_interactions"])]
    feats, zs, energies, counts = [], [], [], []
    captured = []
    handles = [layer.register_forward_hook(lambda m, i, o: captured.append(o.detach())) for layer in layers]
    try:
        for start in range(0, len(frames), 64):
            batch = frames[start : start + 64]
            captured.clear()
            with torch.no_grad():
                numbers, positions, structure = batch_tensors(batch)
                energy = model(numbers, positions, structure)
            feats.append(torch.cat(captured, dim=1).numpy())
            zs.append(numbers.numpy())
            energies.append(energy.numpy())
            counts += [len(a) for a in batch]
    finally:
        for h in handles:
            h.remove()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return np.concatenate(feats).astype(np.float32), np.concatenate(zs), offsets, np.concatenate(energies)


class ReplicatedSource:
    """``n`` reference atoms: the real atoms, then replicas of them with Gaussian noise (a
    ``build_reference`` source, streamed in chunks)."""

    def __init__(self, real, z, energies, counts, n, noise, chunk=1 << 18, seed=0):
        self.real, self.z, self.n, self.chunk, self.seed = real, z, int(n), chunk, seed
        self.sigma = noise * real.std(0)
        self.n_features = real.shape[1]
        self.n_atoms = self.n
        reps = max(1, -(-self.n // len(real)))
        self._scalars = (np.tile(energies, reps), np.tile(counts.astype(np.float64), reps))

    def structure_scalars(self):
        return self._scalars

    def block(self, start, stop):
        rows = np.arange(start, stop) % len(self.real)
        x = self.real[rows].copy()
        noisy = np.arange(start, stop) >= len(self.real)
        if noisy.any():
            rng = np.random.default_rng([self.seed, start])
            x[noisy] += (rng.standard_normal((int(noisy.sum()), self.n_features), dtype=np.float32)) * self.sigma
        return x, self.z[rows]

    def chunks(self, features=True):
        for start in range(0, self.n, self.chunk):
            x, z = self.block(start, min(self.n, start + self.chunk))
            yield (x if features else None), z


def _exact_neighbours(source, queries, k, mean, std):
    """Exact k nearest (labels, squared distances) of standardised ``queries`` over the
    whole streamed reference, chunk by chunk (FAISS brute-force k-NN, merged)."""
    import faiss

    best_d = np.full((len(queries), k), np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    position = 0
    for x, _ in source.chunks():
        x = ((x - mean) / std).astype(np.float32)
        d, i = faiss.knn(queries, x, k)
        d_all = np.concatenate([best_d, d], 1)
        i_all = np.concatenate([best_i, i + position], 1)
        order = np.argsort(d_all, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(d_all, order, 1), np.take_along_axis(i_all, order, 1)
        position += len(x)
    return best_i, best_d


def _rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def run(args):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import faiss
    import torch
    from ase.cluster import Octahedron

    from probe_base import toy
    from probe_base.domain import DomainModel
    from probe_base.reference_index import build_reference
    from probe_base.store import FeatureSet

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    train = toy.emt_clusters(120, seed=0, rattle=(0.02, 0.08))
    model = toy.train(
        train, [a.get_potential_energy() for a in train], [a.get_forces() for a in train], seed=0, epochs=25
    )
    real, z, offsets, energies = _features(model, toy.emt_clusters(args.base, seed=10, rattle=(0.02, 0.08)))
    counts = np.diff(offsets)

    def feature_set(frames):
        f, zz, off, e = _features(model, frames)
        return FeatureSet(f, zz, off, e)

    calibration = feature_set(toy.emt_clusters(300, seed=11, rattle=(0.02, 0.08)))
    test_sets = {
        "in distribution": feature_set(toy.emt_clusters(1000, seed=12, rattle=(0.02, 0.08))),
        "hot": feature_set(toy.emt_clusters(300, seed=13, rattle=(0.15, 0.25))),
        "strained": feature_set(toy.emt_clusters(300, seed=14, rattle=(0.02, 0.08), strain=(1.06, 1.10))),
        "vacancy": feature_set(toy.emt_clusters(300, seed=15, rattle=(0.08, 0.12), vacancy_fraction=1.0)),
    }
    print(f"features: {len(real)} real atoms x {real.shape[1]} ({time.perf_counter() - t0:.0f} s)", flush=True)

    # the backbone's step at ~100 atoms (energy + forces), the MD step the domain query joins
    big = Octahedron("Cu", 6, 1)
    big.positions += np.random.default_rng(0).normal(0, 0.05, big.positions.shape)
    step = []
    for _ in range(30):
        start = time.perf_counter()
        toy.energies_and_forces(model, [big], compute_forces=True)
        step.append(time.perf_counter() - start)
    backbone_step = float(np.median(step[5:]))
    step_atoms = len(big)
    md_queries = calibration.features[:step_atoms]  # ~100 in-distribution atoms, one "step"

    rows, side_by_side = [], {}
    rng = np.random.default_rng(1)
    query_atoms = test_sets["in distribution"].features
    queries_raw = query_atoms[np.sort(rng.choice(len(query_atoms), args.queries, replace=False))]
    for n in args.sizes:
        source = ReplicatedSource(real, z, energies, counts, n, args.noise)
        rss_before = _rss_gb()
        start = time.perf_counter()
        built = build_reference(source, progress=True)
        build_s = time.perf_counter() - start
        index = built.indexes[29]
        data, meta = index.state()
        q = ((queries_raw - built.mean_) / built.std_).astype(np.float32)
        start = time.perf_counter()
        exact_i, exact_d = _exact_neighbours(source, q, 5, built.mean_, built.std_)
        exact_s = time.perf_counter() - start
        if index.kind == "flat":
            found = exact_i
            approx_mean = index.mean_distance(q, 5)
        else:
            found = index.index.search(q, 5)[1]
            approx_mean = index.mean_distance(q, 5)
        recall = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact_i, found)]))
        exact_mean = np.sqrt(np.maximum(exact_d, 0)).mean(1)
        novelty_error = float(np.median(np.abs(approx_mean / exact_mean - 1)))
        start = time.perf_counter()
        index.mean_distance(q, 5)
        per_atom = (time.perf_counter() - start) / len(q)
        domain = DomainModel().fit(built, calibration)
        step_times = []
        for _ in range(20):
            start = time.perf_counter()
            domain.novelty_of_one(md_queries, domain.one_structure_search(np.full(step_atoms, 29)), 0.0)
            step_times.append(time.perf_counter() - start)
        md_step = float(np.median(step_times[3:]))
        flags = {name: float(1 - domain.in_domain(X).mean()) for name, X in test_sets.items()}
        row = {
            "reference_atoms": n,
            "index": index.kind,
            "params": {k: v for k, v in index.params.items() if k != "seed"},
            "build_seconds": build_s,
            "index_bytes": int(len(data)),
            "bytes_per_atom": len(data) / n,
            "peak_rss_gb_after": _rss_gb(),
            "peak_rss_gb_before": rss_before,
            "recall_at_5": recall,
            "median_relative_novelty_error": novelty_error,
            "query_seconds_per_atom_batch": per_atom,
            "domain_seconds_per_md_step": md_step,
            "md_step_atoms": step_atoms,
            "domain_share_of_backbone_step": md_step / backbone_step,
            "exact_knn_seconds_for_queries": exact_s,
            "threshold": domain.threshold_,
            "flag_rates": flags,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if n <= args.exact_compare:  # the same reference exact, side by side
            exact_ref = build_reference(source, exact_max_atoms=10**12, progress=False)
            exact_domain = DomainModel().fit(exact_ref, calibration)
            side_by_side[str(n)] = {
                "approximate": flags,
                "exact": {name: float(1 - exact_domain.in_domain(X).mean()) for name, X in test_sets.items()},
                "approximate_index": index.kind,
            }
            print(json.dumps(side_by_side[str(n)]), flush=True)
        del built, index, data, domain
        _write(args, rows, side_by_side, backbone_step, step_atoms, len(real))
    return 0


def _write(args, rows, side_by_side, backbone_step, step_atoms, n_real):
    import platform

    out = {
        "experiment": "reference_scale",
        "features": f"TinyMLIP (64 features) on {n_real} real EMT Cu cluster atoms; larger references: "
        f"real atoms replicated with Gaussian noise {args.noise} x feature std",
        "threads": 1,
        "machine": platform.processor() or platform.machine(),
        "backbone_step_seconds": backbone_step,
        "backbone_step_atoms": step_atoms,
        "sevenn_step_seconds_99_atoms_from_step_cost_sevenn_json": 0.488,
        "rows": rows,
        "exact_vs_approximate_flag_rates": side_by_side,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reference_scale.json").write_text(json.dumps(out, indent=1))
    lines = [
        "# Domain reference at scale (benchmarks/reference_scale.py)",
        "",
        out["features"] + "; one thread. Backbone step (TinyMLIP energy + forces, "
        f"{step_atoms} atoms): {1e3 * backbone_step:.2f} ms.",
        "",
        "| reference atoms | index | build s | bytes/atom | recall@5 | novelty err | query us/atom | "
        "domain ms/MD step | / toy step | / SevenNet-0 step | ID flagged | hot | strained | vacancy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["flag_rates"]
        lines.append(
            f"| {r['reference_atoms']:.0e} | {r['index']} | {r['build_seconds']:.1f} | {r['bytes_per_atom']:.1f} | "
            f"{r['recall_at_5']:.3f} | {100 * r['median_relative_novelty_error']:.2f} % | "
            f"{1e6 * r['query_seconds_per_atom_batch']:.1f} | {1e3 * r['domain_seconds_per_md_step']:.2f} | "
            f"{r['domain_share_of_backbone_step']:.2f} | {r['domain_seconds_per_md_step'] / 0.488:.4f} | "
            f"{100 * f['in distribution']:.1f} % | {100 * f['hot']:.1f} % | {100 * f['strained']:.1f} % | "
            f"{100 * f['vacancy']:.1f} % |"
        )
    if side_by_side:
        lines += ["", "Exact vs approximate index, same reference (flag rates):", ""]
        lines += ["| reference atoms | index | ID flagged | hot | strained | vacancy |", "|---|---|---|---|---|---|"]
        for n, both in side_by_side.items():
            for kind in ("exact", "approximate"):
                f = both[kind]
                label = kind if kind == "exact" else f"approximate ({both['approximate_index']})"
                lines.append(
                    f"| {int(n):.0e} | {label} | {100 * f['in distribution']:.1f} % | {100 * f['hot']:.1f} % | "
                    f"{100 * f['strained']:.1f} % | {100 * f['vacancy']:.1f} % |"
                )
    lines += ["", "SevenNet-0 step at 99 atoms: 0.488 s CPU, from results/step_cost_sevenn.json (an earlier run)."]
    (RESULTS / "reference_scale.md").write_text("\n".join(lines) + "\n")
    _plot(rows)


def _plot(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["reference_atoms"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].loglog(n, [r["build_seconds"] for r in rows], "o-")
    axes[0].set(xlabel="reference atoms", ylabel="build s")
    axes[1].semilogx(n, [r["bytes_per_atom"] for r in rows], "o-")
    axes[1].set(xlabel="reference atoms", ylabel="index bytes / atom")
    axes[2].loglog(n, [1e6 * r["query_seconds_per_atom_batch"] for r in rows], "o-", label="query us/atom")
    axes[2].loglog(n, [1e3 * r["domain_seconds_per_md_step"] for r in rows], "s-", label="ms per MD step")
    axes[2].set(xlabel="reference atoms")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "reference_scale.png", dpi=110)


def register(sub):
    s = sub.add_parser("reference-scale", help="domain reference index: build, memory, recall, query cost vs size")
    s.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    s.add_argument("--base", type=int, default=2000, help="real EMT clusters read by the backbone")
    s.add_argument("--noise", type=float, default=0.1, help="replica noise, in feature standard deviations")
    s.add_argument("--queries", type=int, default=300, help="query atoms for recall and query time")
    s.add_argument("--exact-compare", type=int, default=10**5, help="also the exact index up to this size")
    s.set_defaults(handler=run)
