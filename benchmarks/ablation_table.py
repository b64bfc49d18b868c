"""Collect every benchmarks/results/signal_*.json into one recipe x dataset table.

    python -m benchmarks.ablation_table     # writes benchmarks/results/ablation.md

Rows: backbone, dataset, label, recipe. Values: mean ± std over backbone seeds x probe
seeds, the 95 % CI of the mean for PROBE and the ensemble-of-N energy std, and the paired
difference per run (same backbone, same evaluation half) with its 95 % CI.
"""

import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def fmt(s, ci=False):
    if not s:
        return "-"
    text = f"{s['mean']:.3f} ± {s['std']:.3f}"
    return text + (f" [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" if ci else "")


def paired(rows, a, b):
    """Mean of (a - b) over runs on the same structures, with its 95 % CI."""
    d = np.array([r[a] - r[b] for r in rows if a in r and b in r])
    if len(d) < 2:
        return "-"
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"


def main():
    lines = ["| backbone | dataset | label | recipe | runs | PROBE AUROC [95% CI] | ensemble AUROC [95% CI] | "
             "latent AUROC | PROBE AURC [95% CI] | ensemble AURC [95% CI] | PROBE ECE | win rate AUROC / AURC | "
             "paired ΔAUROC (PROBE − ens.) | paired ΔAURC (PROBE − ens.) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("signal_*.json")):
        payload = json.loads(path.read_text())
        label = payload["target"] + (" (offset removed)" if payload.get("remove_offset") else "") + ", median"
        for recipe, s in payload["summary"].items():
            lines.append(
                f"| {payload['backbone']} | {payload['dataset']} | {label} | {recipe} | {s['probe_auroc']['n']} | "
                f"{fmt(s['probe_auroc'], True)} | {fmt(s['ensemble_auroc'], True)} | {fmt(s['latent_auroc'])} | "
                f"{fmt(s['probe_aurc'], True)} | {fmt(s['ensemble_aurc'], True)} | {fmt(s['probe_ece'])} | "
                f"{s['win_rate_auroc']:.2f} / {s['win_rate_aurc']:.2f} | "
                f"{paired(payload['runs'][recipe], 'probe_auroc', 'ensemble_auroc')} | "
                f"{paired(payload['runs'][recipe], 'probe_aurc', 'ensemble_aurc')} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "ablation.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
