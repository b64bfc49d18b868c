"""``reference-scale``'s run: per size the approximate indexes built, measured for memory,
recall and query time per atom and per MD step, and up to ``--exact-compare`` atoms the flag
rates beside the exact index; then the result files (``page``)."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from benchmarks.reference_scale.page import _write
from benchmarks.reference_scale.source import ReplicatedSource, _exact_neighbours, _features, _md_trajectory
from benchmarks.reference_scale.timing import _rss_gb, _time_md_run, sevenn_step

SIZES = (10**4, 10**5, 10**6, 10**7)


# approximate vs exact flag rate, same reference and structures: apart by at most two binomial
# standard errors of the exact rate on that set's structures (at least 1 percentage point)
def flag_tolerance(rate: float, n_structures: int) -> float:
    return max(0.01, 2.0 * float(np.sqrt(rate * (1.0 - rate) / n_structures)))


def run(args):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import faiss
    import torch
    from ase.cluster import Octahedron

    from probe_base import toy
    from probe_base.domain.model import DomainModel
    from probe_base.domain.reference_build import build_reference
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
    md_frames = _md_trajectory(model, args.md_steps)

    rows, side_by_side, sevenn_steps = [], {}, []
    rng = np.random.default_rng(1)
    query_atoms = test_sets["in distribution"].features
    queries_raw = query_atoms[np.sort(rng.choice(len(query_atoms), args.queries, replace=False))]
    step_z = np.full(step_atoms, 29)
    for n in args.sizes:
        source = ReplicatedSource(real, z, energies, counts, n, args.noise)
        built, domains, size_rows = {}, {}, []
        for kind in args.kinds:
            if n <= 50_000 and kind != args.kinds[0]:
                continue  # exact at this size whatever the approximate kind
            rss_before = _rss_gb()
            start = time.perf_counter()
            built[kind] = build_reference(source, progress=True, kind=kind)
            build_s = time.perf_counter() - start
            domains[kind] = DomainModel().fit(built[kind], calibration)
            size_rows.append({"kind": kind, "build_seconds": build_s, "rss_before": rss_before, "rss": _rss_gb()})
        first = built[next(iter(built))]
        q = ((queries_raw - first.mean_) / first.std_).astype(np.float32)
        start = time.perf_counter()
        exact_i, exact_d = _exact_neighbours(source, q, 5, first.mean_, first.std_)
        exact_s = time.perf_counter() - start
        exact_mean = np.sqrt(np.maximum(exact_d, 0)).mean(1)
        # the domain query of one MD step (140 atoms, one element) with each kind: interleaved
        # rounds, the minimum of each (the machine is shared: minima are the least disturbed)
        # a fresh search every call: the same features each round would be the kept search's best case
        searches = {kind: domains[kind].element_groups(step_z) for kind in domains}
        standardised = ((md_queries - first.mean_) / first.std_).astype(np.float32)
        times = {kind: {"md_step": [], "faiss_search": [], "coarse_quantizer": []} for kind in domains}
        for _ in range(args.rounds):
            for kind, domain in domains.items():
                index = domain.reference_[29]
                t = time.perf_counter()
                domain.novelty_of_one(md_queries, searches[kind], 0.0)
                times[kind]["md_step"].append(time.perf_counter() - t)
                t = time.perf_counter()
                index.mean_distance(standardised, 5)
                times[kind]["faiss_search"].append(time.perf_counter() - t)
                if index.kind != "flat":
                    ivf = faiss.extract_index_ivf(index.index)
                    t = time.perf_counter()
                    ivf.quantizer.search(standardised, ivf.nprobe)
                    times[kind]["coarse_quantizer"].append(time.perf_counter() - t)
        measured = sevenn_step(args.sevenn_python)
        if measured:
            sevenn_steps.append(measured["seconds"])
        md_run = _time_md_run(domains, md_frames, args.md_rounds)
        for info in size_rows:
            kind = info["kind"]
            domain, index = domains[kind], domains[kind].reference_[29]
            data, _ = index.state()
            found = exact_i if index.kind == "flat" else index.index.search(q, 5)[1]
            recall = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact_i, found)]))
            approx_mean = index.mean_distance(q, 5)
            start = time.perf_counter()
            index.mean_distance(q, 5)
            per_atom = (time.perf_counter() - start) / len(q)
            md_step = float(min(times[kind]["md_step"]))
            row = {
                "reference_atoms": n,
                "index": index.kind,
                "params": {k: v for k, v in index.params.items() if k != "seed"},
                "build_seconds": info["build_seconds"],
                "index_bytes": int(len(data)),
                "bytes_per_atom": len(data) / n,
                "peak_rss_gb_after": info["rss"],
                "peak_rss_gb_before": info["rss_before"],
                "recall_at_5": recall,
                "median_relative_novelty_error": float(np.median(np.abs(approx_mean / exact_mean - 1))),
                "query_seconds_per_atom_batch": per_atom,
                "domain_seconds_per_md_step": md_step,
                "md_step_profile_seconds": {
                    "novelty_of_one": md_step,
                    "index_search": float(min(times[kind]["faiss_search"])),
                    "coarse_quantizer": float(min(times[kind]["coarse_quantizer"]))
                    if times[kind]["coarse_quantizer"]
                    else 0.0,
                },
                "md_step_atoms": step_atoms,
                "md_run": {**md_run[kind], "steps": len(md_frames), "atoms": len(md_frames[0])},
                "domain_share_of_backbone_step": md_step / backbone_step,
                "exact_knn_seconds_for_queries": exact_s,
                "threshold": domain.threshold_,
                "flag_rates": {name: float(1 - domain.in_domain(X).mean()) for name, X in test_sets.items()},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        if n <= args.exact_compare and any(k != "flat" for k in (d.reference_[29].kind for d in domains.values())):
            exact_ref = build_reference(source, exact_max_atoms=10**12, progress=False)
            exact_domain = DomainModel().fit(exact_ref, calibration)
            both = {"exact": {name: float(1 - exact_domain.in_domain(X).mean()) for name, X in test_sets.items()}}
            both["exact_threshold"] = exact_domain.threshold_
            for kind, domain in domains.items():
                both[kind] = {name: float(1 - domain.in_domain(X).mean()) for name, X in test_sets.items()}
            both["tolerance"] = {name: flag_tolerance(both["exact"][name], len(X)) for name, X in test_sets.items()}
            both["within_tolerance"] = {
                kind: all(abs(both[kind][name] - both["exact"][name]) <= both["tolerance"][name] for name in test_sets)
                for kind in domains
            }
            side_by_side[str(n)] = both
            print(json.dumps(both), flush=True)
            del exact_ref, exact_domain
        del built, domains, searches
        _write(args, rows, side_by_side, backbone_step, step_atoms, len(real), sevenn_steps)
    return 0
