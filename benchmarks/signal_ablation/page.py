"""One signal-ablation run as a Markdown table (recipes x signals, mean ± std over seeds) and
a plot of each recipe's AUROC against the ensemble's and latent distance's."""

from __future__ import annotations

import numpy as np


def markdown(payload):
    def fmt(s):
        return "-" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f}"

    offset = ", offset removed" if payload.get("remove_offset") else ""
    lines = [
        f"### {payload['backbone']} / {payload['dataset']} ({payload['n_heldout']} held-out, "
        f"target {payload['target']}{offset}, {len(payload['models'])} backbone seeds)",
        "",
        "| backbone | E MAE (meV) | mean signed E error (meV) | F RMSE (meV/Å) |",
        "|---|---|---|---|",
    ]
    for name, b in payload["backbones"].items():
        lines.append(
            f"| {name} | {b['energy_mae_meV']:.1f} | {b['energy_mean_signed_meV']:.1f} | {b['force_rmse_meV_per_A']:.1f} |"
        )
    lines += [
        "",
        "| recipe | PROBE AUROC | ensemble AUROC | latent AUROC | PROBE AURC | ensemble AURC | PROBE ECE | "
        "AUROC win rate | 95% CI of mean AUROC (PROBE / ensemble) | fit s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe, s in payload["summary"].items():
        ci = (
            f"[{s['probe_auroc']['ci95'][0]:.3f}, {s['probe_auroc']['ci95'][1]:.3f}] / "
            f"[{s['ensemble_auroc']['ci95'][0]:.3f}, {s['ensemble_auroc']['ci95'][1]:.3f}]"
            if s["ensemble_auroc"]
            else "-"
        )
        lines.append(
            f"| {recipe} | {fmt(s['probe_auroc'])} | {fmt(s['ensemble_auroc'])} | {fmt(s['latent_auroc'])} | "
            f"{fmt(s['probe_aurc'])} | {fmt(s['ensemble_aurc'])} | {fmt(s['probe_ece'])} | "
            f"{s['win_rate_auroc']:.2f} | {ci} | {s['fit_seconds']['mean']:.1f} |"
        )
    c = payload["cost"]
    lines += [
        "",
        f"Cost on {c['structures']} structures (energy+forces, batches of 32, 1 thread): one backbone "
        f"pass {c['backbone_seconds']:.2f} s; with PROBE's hooks ×{c['hook_overhead_ratio']:.3f}; probe "
        f"inference on the captured features ×{c['probe_overhead_ratio']:.3f} of the backbone pass; "
        f"ensemble of {c['n_members']} ×{c['ensemble_ratio']:.2f}; one probe training epoch on cached "
        f"features = ×{c['probe_epoch_vs_backbone_pass_over_fit_set']:.3f} of one backbone pass over the fitting set.",
        "",
    ]
    return "\n".join(lines)


def plot(payload, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = list(payload["summary"])
    fig, ax = plt.subplots(figsize=(1.2 * len(recipes) + 3, 4))
    x = np.arange(len(recipes))
    for offset, key, label in (
        (-0.2, "probe_auroc", "PROBE"),
        (0.0, "ensemble_auroc", "ensemble std"),
        (0.2, "latent_auroc", "latent distance"),
    ):
        means = [payload["summary"][r][key]["mean"] if payload["summary"][r][key] else np.nan for r in recipes]
        stds = [payload["summary"][r][key]["std"] if payload["summary"][r][key] else 0 for r in recipes]
        ax.errorbar(x + offset, means, yerr=stds, fmt="o", capsize=3, label=label)
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_xticks(x, recipes, rotation=30, ha="right")
    ax.set_ylabel("AUROC (unreliable detection), mean ± std")
    ax.set_title(f"{payload['backbone']} / {payload['dataset']}: PROBE recipes vs ensemble")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
