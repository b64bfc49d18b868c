"""The two sides of every speed comparison: a code tree per git ref (``probe_base`` and the
plugins exported with ``git archive``), the environment that imports it, and the timing of
subprocesses in interleaved rounds summarised as a ratio of medians."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, REPO

SPEED_CACHE = CACHE / "speed"  # code trees of the compared refs, toy stores
BEFORE_SPEED_WORK = "136bead"  # main when issue 18 started


def code_tree(ref: str | None) -> Path:
    """A folder whose ``probe_base`` (and plugins) are the repository's at ``ref``; the
    working tree for None."""
    if ref is None:
        return REPO
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", ref], check=True, capture_output=True, text=True
    ).stdout.strip()
    folder = SPEED_CACHE / f"code-{sha}"
    if not (folder / "probe_base").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", sha, "probe_base", "probe_plugins"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def python_path(tree: Path, plugins=()) -> str:
    parts = [str(tree)] + [str(tree / "probe_plugins" / p) for p in plugins]
    return os.pathsep.join(
        parts + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO]
    )


def environment(tree: Path, plugins=()) -> dict:
    """Subprocess environment importing ``tree``'s code (run it with cwd=tree too: ``-m``
    and ``-c`` put the working directory first on sys.path)."""
    return {**os.environ, "PYTHONPATH": python_path(tree, plugins), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def timed(command, env, cwd=None) -> float:
    """Wall seconds of one subprocess (it must succeed)."""
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{result.stderr[-3000:]}")
    return seconds


def interleaved(variants: dict, rounds: int) -> dict:
    """``variants``: name -> callable returning seconds. Rounds alternate the order."""
    names = list(variants)
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(variants[name]())
            print(f"  round {r + 1}/{rounds} {name}: {times[name][-1]:.2f} s", flush=True)
    return times


def summary(times: dict, before="before", after="after", per=None) -> dict:
    """Medians and the ratio of medians (before / after); ``per``: divisors (e.g. resamples
    each side ran) so that unequal workloads compare per unit."""
    per = per or {}
    medians = {k: float(np.median(v)) for k, v in times.items()}
    unit = {k: medians[k] / per.get(k, 1) for k in medians}
    return {"seconds": times, "median_seconds": medians, "speedup": unit[before] / unit[after]}
