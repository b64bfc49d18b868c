"""The runs of ``evaluate-speed`` (``probe evaluate`` and ``evaluate_signal``, before vs
after) and ``startup`` (``probe --help``, ``probe plugins``), each writing its result JSON
and Markdown page."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS
from benchmarks.report import write_markdown
from benchmarks.speed.compare import code_tree, environment, interleaved, summary, timed
from benchmarks.speed.toy_store import toy_store

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
