"""Plots of an evaluation: ROC, risk-coverage, reliability diagram, error vs probability."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from .metrics import risk_coverage  # noqa: E402


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(evaluation, output_dir) -> list[Path]:
    arrays = evaluation["arrays"]
    unreliable, scores = arrays["unreliable"], arrays["scores"]
    p, errs = arrays["p_reliable"], arrays["errors"]
    metrics = evaluation["metrics"]
    output_dir = Path(output_dir)
    paths = []

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(unreliable, score)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {metrics[name]['auroc'][0]:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate (unreliable found)",
        title="Detecting unreliable predictions",
    )
    ax.legend(fontsize=8)
    paths.append(output_dir / "roc.png")
    _save(fig, paths[-1])

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, score in scores.items():
        coverage, risk = risk_coverage(score, unreliable)
        ax.plot(coverage, risk, label=f"{name} (AURC {metrics[name]['aurc'][0]:.3f})")
    ax.set(
        xlabel="coverage (fraction of predictions accepted)",
        ylabel="selective risk (unreliable among accepted)",
        title="Risk-coverage",
    )
    ax.legend(fontsize=8)
    paths.append(output_dir / "risk_coverage.png")
    _save(fig, paths[-1])

    fig, ax = plt.subplots(figsize=(5, 4.5))
    bins = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(p, bins) - 1, 0, 9)
    centers, observed, counts = [], [], []
    for b in range(10):
        sel = which == b
        if sel.any():
            centers.append(p[sel].mean())
            observed.append(1 - unreliable[sel].mean())
            counts.append(sel.sum())
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="perfect calibration")
    ax.plot(centers, observed, "o-", label=f"PROBE (ECE {metrics['PROBE']['ece'][0]:.3f})")
    ax.set(
        xlabel="predicted P(reliable)",
        ylabel="observed fraction reliable",
        title="Reliability diagram",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=8)
    paths.append(output_dir / "reliability_diagram.png")
    _save(fig, paths[-1])

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(p, errs, s=6, c=unreliable, cmap="coolwarm", alpha=0.7)
    ax.axhline(evaluation["label"]["threshold"], color="k", ls="--", lw=0.8, label="threshold")
    ax.set(
        xlabel="P(reliable)",
        ylabel=f"{evaluation['label']['target']} error",
        yscale="log",
        title="Error vs PROBE probability",
    )
    ax.legend(fontsize=8)
    paths.append(output_dir / "error_vs_probability.png")
    _save(fig, paths[-1])
    return paths
