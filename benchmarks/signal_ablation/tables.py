"""``ablation-table``: ``results/ablation.md`` from every signal-ablation JSON (one row per
backbone x dataset x label x recipe, with paired differences), or one run's per-seed
bootstrap intervals (``<run>_bootstrap.md``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS
from benchmarks.report import table, write_markdown


def _mean_std(s, ci=False):
    if not s:
        return "-"
    text = f"{s['mean']:.3f} ± {s['std']:.3f}"
    return text + (f" [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]" if ci else "")


def _paired(rows, a, b):
    """Mean of (a - b) over runs on the same structures, with its 95 % CI."""
    d = np.array([r[a] - r[b] for r in rows if a in r and b in r])
    if len(d) < 2:
        return "-"
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"


def ablation_table(results=RESULTS) -> str:
    """results/ablation.md: every signal_*.json, one row per backbone x dataset x label x recipe."""
    header = [
        "backbone",
        "dataset",
        "label",
        "recipe",
        "runs",
        "PROBE AUROC [95% CI]",
        "ensemble AUROC [95% CI]",
        "latent AUROC",
        "PROBE AURC [95% CI]",
        "ensemble AURC [95% CI]",
        "PROBE ECE",
        "win rate AUROC / AURC",
        "paired ΔAUROC (PROBE − ens.)",
        "paired ΔAURC (PROBE − ens.)",
    ]
    rows = []
    for path in sorted(results.glob("signal_*.json")):
        payload = json.loads(path.read_text())
        label = payload["target"] + (" (offset removed)" if payload.get("remove_offset") else "") + ", median"
        for recipe, s in payload["summary"].items():
            runs = payload["runs"][recipe]
            rows.append(
                [
                    payload["backbone"],
                    payload["dataset"],
                    label,
                    recipe,
                    s["probe_auroc"]["n"],
                    _mean_std(s["probe_auroc"], True),
                    _mean_std(s["ensemble_auroc"], True),
                    _mean_std(s["latent_auroc"]),
                    _mean_std(s["probe_aurc"], True),
                    _mean_std(s["ensemble_aurc"], True),
                    _mean_std(s["probe_ece"]),
                    f"{s['win_rate_auroc']:.2f} / {s['win_rate_aurc']:.2f}",
                    _paired(runs, "probe_auroc", "ensemble_auroc"),
                    _paired(runs, "probe_aurc", "ensemble_aurc"),
                ]
            )
    return write_markdown(results / "ablation.md", "\n".join(table(header, rows)) + "\n")


def bootstrap_table(json_path: Path) -> Path:
    """``<run>_bootstrap.md`` next to a signal-ablation JSON: per backbone seed (probe seed 0,
    default recipe), AUROC, AURC, Spearman and ECE with 95 % bootstrap intervals."""
    payload = json.loads(Path(json_path).read_text())
    rows = []
    for seed, signals in payload["bootstrap_seed0"].items():
        for signal, metrics in signals.items():
            cells = []
            for key in ("auroc", "aurc", "spearman", "ece"):
                if key in metrics:
                    value, low, high = metrics[key]
                    cells.append(f"{value:.3f} [{low:.3f}, {high:.3f}]")
                else:
                    cells.append("—")
            rows.append([seed, signal, *cells])
    lines = [
        f"### {payload['backbone']} / {payload['dataset']}: bootstrap 95 % intervals "
        f"(probe seed 0, {payload['n_heldout']} held-out, half scored)",
        "",
        *table(["backbone", "signal", "AUROC", "AURC", "Spearman", "ECE"], rows),
    ]
    out = Path(json_path).with_name(Path(json_path).stem + "_bootstrap.md")
    write_markdown(out, "\n".join(lines) + "\n")
    return out


def ablation_table_command(args):
    if args.bootstrap:
        bootstrap_table(args.bootstrap)
    else:
        ablation_table()
    return 0
