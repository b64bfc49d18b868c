"""The speed section of ``results/README.md``: the ratios of every speed, step-cost,
scaling and attention result found in ``results/``."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import RESULTS


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
