"""The reference-scale benchmark's timings beside the index: the domain query over an MD run
with a kept and a fresh search, SevenNet-0's step in another environment, and the process's
peak memory."""

from __future__ import annotations

import json
import os
import resource
import time

import numpy as np

from benchmarks.common import REPO


def _time_md_run(domains, frames, rounds):
    """Per kind, the domain query of every step of the MD run, through the search a
    calculator keeps across steps (``one_structure_search``, made at the run's start) and
    through a fresh search per step (``element_groups``), in interleaved rounds: the mean
    step (the first included), the first step and the mean of the later ones (what a long
    run costs per step), each the minimum over rounds; the share of atoms the kept search
    searched afresh with the tuned nprobe and with one cell (settling); the largest
    difference of an atom's novelty (1 = the threshold) and whether the atoms' part of the
    decision (max atom novelty <= 1) was the same at every step."""
    z = np.full(len(frames[0]), 29)
    out = {kind: {"kept": [], "fresh": [], "kept_first": [], "kept_later": []} for kind in domains}
    for _ in range(rounds):
        for kind, domain in domains.items():
            for mode in ("kept", "fresh"):
                search = domain.one_structure_search(z) if mode == "kept" else domain.element_groups(z)
                steps = []
                for x in frames:
                    start = time.perf_counter()
                    domain.novelty_of_one(x, search, 0.0)
                    steps.append(time.perf_counter() - start)
                out[kind][mode].append(float(np.mean(steps)))
                if mode == "kept":
                    out[kind]["kept_first"].append(steps[0])
                    out[kind]["kept_later"].append(float(np.mean(steps[1:])))
    result = {}
    for kind, domain in domains.items():
        kept, fresh = domain.one_structure_search(z), domain.element_groups(z)
        worst, same = 0.0, True
        for x in frames:
            a, b = domain.novelty_of_one(x, kept, 0.0), domain.novelty_of_one(x, fresh, 0.0)
            worst = max(worst, float(np.max(np.abs(a[1] - b[1]))))
            # the atoms' part of the decision (the scalar rules read the same energy and count in both)
            same &= bool((a[1].max() <= 1.0) == (b[1].max() <= 1.0))
        tracked = [knn for _, knn, _, _ in kept if hasattr(knn, "searched")] if isinstance(kept, list) else []
        atom_steps = len(frames) * len(z)
        result[kind] = {
            "seconds_per_step_kept": min(out[kind]["kept"]),
            "seconds_first_step_kept": min(out[kind]["kept_first"]),
            "seconds_per_later_step_kept": min(out[kind]["kept_later"]),
            "seconds_per_step_fresh": min(out[kind]["fresh"]),
            "atoms_searched_afresh_share": sum(t.searched for t in tracked) / atom_steps if tracked else None,
            "atoms_settle_searched_share": sum(t.settle_searched for t in tracked) / atom_steps if tracked else None,
            "max_atom_novelty_difference": worst,
            "same_decision_every_step": same,
        }
    return result


SEVENN_STEP_CODE = """
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from sevenn.calculator import SevenNetCalculator
from benchmarks.step_cost.models import replicated_ethanol
atoms = replicated_ethanol(11)
atoms.calc = SevenNetCalculator("7net-0", device="cpu")
rng = np.random.default_rng(0)
times = []
for _ in range(int(sys.argv[1])):
    atoms.positions += rng.normal(0, 0.002, atoms.positions.shape)
    start = time.perf_counter()
    atoms.get_forces()
    times.append(time.perf_counter() - start)
print(json.dumps({"atoms": len(atoms), "seconds": float(np.median(times[3:]))}))
"""


def sevenn_step(python, steps=20) -> dict | None:
    """SevenNet-0's energy + forces step at 99 atoms (11 ethanol molecules, one thread) in
    the environment of ``python`` (one with sevenn), timed in this run; None without one."""
    if not python:
        return None
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [python, "-c", SEVENN_STEP_CODE, str(steps)], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
