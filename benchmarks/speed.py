"""How fast the tools are, against the code before the speed work (issue 18).

Every comparison runs the two versions of ``probe_base`` in separate processes, in
interleaved rounds (A B, B A, A B, ...), and reports the ratio of the medians measured
in that one run, so that the load of a shared machine hits both sides alike.

    python -m benchmarks evaluate-speed     # `probe evaluate` on 1000 structures (toy
                                            # backbone), evaluate_signal on 1e5
    python -m benchmarks startup            # `probe --help`, `probe plugins`

The baseline is ``probe_base`` at ``--baseline`` (default: the commit before the speed
work), exported with ``git archive`` into the cache and put first on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, REPO, RESULTS
from benchmarks.report import write_markdown

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


# ---- `probe evaluate` on a toy store ---------------------------------------------------
def toy_store(n_structures: int, with_probe=True) -> tuple[Path, Path | None]:
    """A store of ``n_structures`` EMT clusters read by a 3-member toy backbone, and a
    probe fitted on half of it by the baseline code (so both versions can load it)."""
    import ase.io

    from probe_base import toy
    from probe_base.store import extract

    folder = SPEED_CACHE / f"toy_{n_structures}"
    folder.mkdir(parents=True, exist_ok=True)
    models = []
    train = None
    for seed in range(3):
        path = folder / f"toy{seed}.pt"
        if not path.exists():
            train = train or toy.emt_clusters(120, seed=0, rattle=(0.02, 0.08))
            toy.save_model(
                toy.train(
                    train,
                    [a.get_potential_energy() for a in train],
                    [a.get_forces() for a in train],
                    seed=seed,
                    epochs=25,
                ),
                path,
            )
        models.append(path)
    store = folder / "store.h5"
    if not store.exists():
        heldout = folder / "structures.xyz"
        ase.io.write(
            heldout,
            toy.emt_clusters(n_structures, seed=1, rattle=(0.02, 0.2), vacancy_fraction=0.3, strain=(0.97, 1.03)),
        )
        extract(toy.ToyAdapter(models), heldout, store, progress=False)
    probe = folder / "toy.probe"
    if not with_probe:
        return store, None
    if not probe.exists():
        print(f"fitting the probe on {n_structures // 2} structures (baseline code)", flush=True)
        timed(
            [
                sys.executable,
                "-m",
                "probe_base.cli",
                "fit",
                "--store",
                str(store),
                "--output",
                str(probe),
                "--eval-fraction",
                "0.5",
                "--epochs",
                "30",
            ],
            environment(code_tree(BEFORE_SPEED_WORK)),
            cwd=code_tree(BEFORE_SPEED_WORK),
        )
    return store, probe


SIGNAL_CODE = """
import sys, time
import numpy as np
try:
    from probe_base.report.bootstrap import evaluate_signal
except ImportError:  # the tree before the speed work: one flat probe_base
    from probe_base.metrics import evaluate_signal
n, resamples = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
bad = rng.integers(0, 2, n)
score = bad + rng.normal(0, 1, n)
p = 1 / (1 + np.exp(score))
# a small call first: both versions then have scikit-learn and scipy imported (the code
# before imported them with the module, this one on first use)
evaluate_signal(score[:50], bad[:50], errors=score[:50], p_reliable=p[:50], n_bootstrap=10)
start = time.perf_counter()
evaluate_signal(score, bad, errors=score + rng.normal(0, 1, n), p_reliable=p, n_bootstrap=resamples)
print(time.perf_counter() - start)
"""


def signal_seconds(tree, n, resamples) -> float:
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_CODE, str(n), str(resamples)],
        env=environment(tree),
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def evaluate_speed(args) -> dict:
    store, probe = toy_store(2 * args.structures)
    trees = {"before": code_tree(args.baseline), "after": code_tree(args.after)}
    out = Path(tempfile.mkdtemp(prefix="evaluate-speed-"))

    def evaluate(name):
        command = [
            sys.executable,
            "-m",
            "probe_base.cli",
            "evaluate",
            "--probe",
            str(probe),
            "--store",
            str(store),
            "--output-dir",
            str(out / name),
            "--bootstrap",
            str(args.bootstrap),
        ]
        return lambda: timed(command, environment(trees[name]), cwd=trees[name])

    print(f"`probe evaluate` on {args.structures} structures, {args.bootstrap} resamples", flush=True)
    payload = {
        "command": f"python -m benchmarks evaluate-speed --rounds {args.rounds}",
        "baseline": args.baseline,
        "structures": args.structures,
        "bootstrap": args.bootstrap,
        "threads": 1,
    }
    payload["probe_evaluate"] = summary(interleaved({k: evaluate(k) for k in trees}, args.rounds))
    print(f"evaluate_signal on {args.structures} structures, {args.bootstrap} resamples", flush=True)
    payload["evaluate_signal_at_evaluate_size"] = summary(
        interleaved(
            {k: (lambda k=k: signal_seconds(trees[k], args.structures, args.bootstrap)) for k in trees}, args.rounds
        )
    )
    # the baseline takes ~0.1 s per resample at 1e5 structures: it runs fewer, compared per resample
    per = {"before": args.signal_baseline_bootstrap, "after": args.bootstrap}
    print(
        f"evaluate_signal on {args.signal_structures} structures ({per['before']} resamples "
        f"before, {per['after']} after)",
        flush=True,
    )
    signal = interleaved(
        {k: (lambda k=k: signal_seconds(trees[k], args.signal_structures, per[k])) for k in trees}, args.rounds
    )
    payload["evaluate_signal"] = {**summary(signal, per=per), "structures": args.signal_structures, "resamples": per}
    (RESULTS / "speed_evaluate.json").write_text(json.dumps(payload, indent=1))
    lines = [
        "# `probe evaluate` speed (toy backbone, 1 thread)",
        "",
        f"`{payload['command']}`; "
        f"before = `probe_base` at {args.baseline}, after = {args.after or 'this tree'}; {args.rounds} interleaved "
        "rounds in one run, ratio of medians.",
        "",
        "| what | before (s, median) | after (s, median) | speed-up |",
        "|---|---|---|---|",
    ]
    e = payload["probe_evaluate"]
    lines.append(
        f"| `probe evaluate`, {args.structures} structures, all baselines, {args.bootstrap} "
        f"resamples, plots | {e['median_seconds']['before']:.2f} | "
        f"{e['median_seconds']['after']:.2f} | x{e['speedup']:.1f} |"
    )
    s = payload["evaluate_signal_at_evaluate_size"]
    lines.append(
        f"| `evaluate_signal` (one method: every metric, errors and P(reliable) given), "
        f"{args.structures} structures, {args.bootstrap} resamples | {s['median_seconds']['before']:.2f} | "
        f"{s['median_seconds']['after']:.3f} | x{s['speedup']:.0f} |"
    )
    s = payload["evaluate_signal"]
    lines.append(
        f"| `evaluate_signal`, {args.signal_structures} structures (before: {per['before']} "
        f"resamples, after: {per['after']}; speed-up per resample) | "
        f"{s['median_seconds']['before']:.2f} | {s['median_seconds']['after']:.2f} | "
        f"x{s['speedup']:.0f} |"
    )
    write_markdown(RESULTS / "speed_evaluate.md", "\n".join(lines) + "\n", echo=False)
    print("\n".join(lines))
    return payload


def startup(args) -> dict:
    trees = {"before": code_tree(args.baseline), "after": code_tree(args.after)}
    payload = {"command": f"python -m benchmarks startup --rounds {args.rounds}", "baseline": args.baseline}
    lines = [
        "# `probe` start-up time (core environment)",
        "",
        f"`{payload['command']}`; {args.rounds} interleaved rounds in one run, ratio of medians.",
        "",
        "| command | before (s, median) | after (s, median) | speed-up |",
        "|---|---|---|---|",
    ]
    for label, argv in (("probe --help", ["--help"]), ("probe plugins", ["plugins"])):
        command = [sys.executable, "-m", "probe_base.cli", *argv]
        print(label, flush=True)
        times = interleaved(
            {k: (lambda k=k, command=command: timed(command, environment(trees[k]), cwd=trees[k])) for k in trees},
            args.rounds,
        )
        payload[label] = summary(times)
        m = payload[label]["median_seconds"]
        lines.append(f"| `{label}` | {m['before']:.2f} | {m['after']:.2f} | x{payload[label]['speedup']:.1f} |")
    (RESULTS / "speed_startup.json").write_text(json.dumps(payload, indent=1))
    write_markdown(RESULTS / "speed_startup.md", "\n".join(lines) + "\n", echo=False)
    print("\n".join(lines))
    return payload


def register(sub) -> None:
    """The subcommands of this module, on the suite's parser."""
    e = sub.add_parser("evaluate-speed", help="`probe evaluate` and evaluate_signal, before vs after")
    e.add_argument("--structures", type=int, default=1000, help="structures evaluated")
    e.add_argument("--bootstrap", type=int, default=1000)
    e.add_argument("--signal-structures", type=int, default=100_000)
    e.add_argument(
        "--signal-baseline-bootstrap",
        type=int,
        default=20,
        help="resamples the baseline runs at --signal-structures (compared per resample)",
    )
    e.add_argument("--rounds", type=int, default=3)
    e.add_argument("--baseline", default=BEFORE_SPEED_WORK)
    e.add_argument("--after", default=None, help="git ref to compare (default: the working tree)")
    e.set_defaults(handler=evaluate_speed)
    s = sub.add_parser("startup", help="`probe --help` and `probe plugins` start-up, before vs after")
    s.add_argument("--rounds", type=int, default=7)
    s.add_argument("--baseline", default=BEFORE_SPEED_WORK)
    s.add_argument("--after", default=None, help="git ref to compare (default: the working tree)")
    s.set_defaults(handler=startup)


# ---- results/README.md ---------------------------------------------------------------------
def readme_section(results: Path = RESULTS) -> str:
    """The speed results found in ``results``, as ratios measured within one run each."""
    lines = [
        "## Speed (issue 18)",
        "",
        "Every figure is a ratio measured within one run (interleaved rounds); absolute times "
        "are from a shared 2-core machine under load (1 thread). Details in each file.",
        "",
    ]
    path = results / "speed_evaluate.json"
    if path.exists():
        p = json.loads(path.read_text())
        e, s = p["probe_evaluate"], p["evaluate_signal"]
        one = p.get("evaluate_signal_at_evaluate_size")
        lines += [
            f"- `probe evaluate`, {p['structures']} structures, all baselines, {p['bootstrap']} resamples, "
            f"plots: x{e['speedup']:.1f} faster ({e['median_seconds']['before']:.0f} s -> "
            f"{e['median_seconds']['after']:.1f} s median)"
            + (f"; `evaluate_signal` (one method) at that size x{one['speedup']:.0f}" if one else "")
            + f"; `evaluate_signal` on {s['structures']} structures: x{s['speedup']:.0f} per resample "
            "(`speed_evaluate.md`)."
        ]
    path = results / "speed_startup.json"
    if path.exists():
        p = json.loads(path.read_text())
        lines += [
            "- start-up: "
            + ", ".join(
                f"`{k}` x{v['speedup']:.1f} ({v['median_seconds']['before']:.2f} s -> {v['median_seconds']['after']:.2f} s)"
                for k, v in p.items()
                if isinstance(v, dict)
            )
            + " (`speed_startup.md`)."
        ]
    for path in sorted(results.glob("step_cost_*.json")):
        p = json.loads(path.read_text())
        cells = []
        for label, rows in p["runs"].items():
            cells.append(
                f"{label}: "
                + ", ".join(
                    f"{100 * r.get('overhead_cpu_within_step', r['overhead_cpu_ratio_of_medians']):+.1f} %"
                    for r in rows
                )
            )
        atoms = ", ".join(str(r["atoms"]) for r in next(iter(p["runs"].values())))
        lines += [
            f"- per MD step, {p['backbone']} ({atoms} atoms), probe overhead in CPU time: "
            + "; ".join(cells)
            + f" (`{path.stem}.md`)."
        ]
    for path in sorted(results.glob("scaling_*.json")):
        p = json.loads(path.read_text())
        if not isinstance(p, dict) or "rows" not in p:
            continue
        last = p["rows"][-1]
        lines += [
            f"- scaling, {p['backbone']} at {last['atoms']} atoms: probe / backbone pass = "
            + ", ".join(f"{n} {100 * last[n]['probe_over_backbone']:.1f} %" for n in last if isinstance(last[n], dict))
            + f" (`{path.stem}.md`)."
        ]
    for path in sorted(results.glob("attention_*.json")):
        p = json.loads(path.read_text())
        for label, s in p["summary"].items():
            lo, hi = s["difference_ci95"]
            lines += [
                f"- pooling vs self-attention probe, {p['store']}, {label}: AUROC {s['pooling_auroc_mean']:.3f} "
                f"vs {s['self_auroc_mean']:.3f}, paired difference {s['difference_mean']:+.3f} "
                f"[{lo:+.3f}, {hi:+.3f}] over {s['n_splits']} splits (`{path.stem}.md`)."
            ]
    return "\n".join(lines) + "\n" if len(lines) > 4 else ""
