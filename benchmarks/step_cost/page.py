"""``step-cost``'s result page and plot: the overhead per MD step of every probe, per
structure size, in ``results/step_cost_<backbone>.{md,png}``."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import RESULTS
from benchmarks.report import write_markdown


def write_report(payload):
    backbone = payload["backbone"]
    runs = payload["runs"]
    lines = [
        f"# Probe cost per MD step: {backbone} ({Path(payload['model']).name}), 1 thread",
        "",
        f"`{payload['command']}`. Overhead = CPU time of a probed step outside the wrapped "
        "calculator's own pass, over that pass, in the same step (median over steps: paired, so "
        "the shared machine's load cancels); in brackets the end-to-end A/B: plain and probed "
        "calculator in interleaved rounds in one process, ratio of median CPU step times - 1 "
        "(noisier: two sets of steps). Plain step = median CPU time of the plain calculator.",
        "",
        "| atoms | plain step (ms CPU) | " + " | ".join(f"{k}" for k in runs) + " |",
        "|---" * (2 + len(runs)) + "|",
    ]
    first = next(iter(runs.values()))
    for i, row in enumerate(first):
        cells = [f"{row['atoms']}", f"{1000 * row['plain_step_cpu_seconds']:.1f}"]
        cells += [
            (f"{100 * r[i]['overhead_cpu_within_step']:+.1f} % " if "overhead_cpu_within_step" in r[i] else "")
            + f"({100 * r[i]['overhead_cpu_ratio_of_medians']:+.1f} %)"
            for r in runs.values()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    write_markdown(RESULTS / f"step_cost_{backbone}.md", "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for label, rows in runs.items():
        atoms = [r["atoms"] for r in rows]
        axes[0].semilogx(
            atoms,
            [100 * r.get("overhead_cpu_within_step", r["overhead_cpu_ratio_of_medians"]) for r in rows],
            "o-",
            label=label,
        )
        axes[1].loglog(atoms, [1000 * r["classifier_cpu_seconds_per_step"] for r in rows], "o-", label=label)
    axes[1].loglog(atoms, [1000 * r["plain_step_cpu_seconds"] for r in first], "k--", label="plain step")
    axes[0].axhline(2, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="atoms", ylabel="probe overhead per step (%, CPU, within step)", title=backbone)
    axes[1].set(xlabel="atoms", ylabel="ms CPU per step", title="probe scoring call per step")
    axes[0].legend(fontsize=8), axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"step_cost_{backbone}.png", dpi=120)
    plt.close(fig)
