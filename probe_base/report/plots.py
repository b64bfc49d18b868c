"""Plots of an evaluation: ROC, risk-coverage, reliability diagram, error vs probability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from probe_base.report.metrics import risk_coverage


def _axes(title, xlabel, ylabel):
    """One plot's figure and axes. Fixed margins that fit these labels, not
    ``tight_layout``, and the title at a fixed height, not placed above whatever the axes
    hold: either measures the drawing, which costs another draw."""
    fig = Figure(figsize=(5, 4.5))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.135, right=0.97, bottom=0.11, top=0.93)
    ax = fig.add_subplot()
    ax.set_title(title, y=1.0)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    return fig, ax


def _save(fig, path):
    fig.savefig(path, dpi=120)


def write_plots(evaluation, output_dir) -> list[Path]:
    arrays = evaluation["arrays"]
    unreliable, scores = arrays["unreliable"], arrays["scores"]
    p, errs = arrays["p_reliable"], arrays["errors"]
    metrics = evaluation["metrics"]
    output_dir = Path(output_dir)
    paths = []

    fig, ax = _axes("Detecting unreliable predictions", "false positive rate", "true positive rate (unreliable found)")
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(unreliable, score)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {metrics[name]['auroc'][0]:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.legend(fontsize=8, loc="lower right")  # below the curves of any method better than random
    paths.append(output_dir / "roc.png")
    _save(fig, paths[-1])

    fig, ax = _axes(
        "Risk-coverage", "coverage (fraction of predictions accepted)", "selective risk (unreliable among accepted)"
    )
    for name, score in scores.items():
        coverage, risk = risk_coverage(score, unreliable)
        ax.plot(coverage, risk, label=f"{name} (AURC {metrics[name]['aurc'][0]:.3f})")
    ax.legend(fontsize=8)
    paths.append(output_dir / "risk_coverage.png")
    _save(fig, paths[-1])

    fig, ax = _axes("Reliability diagram", "predicted P(reliable)", "observed fraction reliable")
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
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")  # above the diagonal the curve stays near
    paths.append(output_dir / "reliability_diagram.png")
    _save(fig, paths[-1])

    fig, ax = _axes("Error vs PROBE probability", "P(reliable)", f"{evaluation['label']['target']} error")
    ax.scatter(p, errs, s=6, c=unreliable, cmap="coolwarm", alpha=0.7)
    ax.axhline(evaluation["label"]["threshold"], color="k", ls="--", lw=0.8, label="threshold")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    paths.append(output_dir / "error_vs_probability.png")
    _save(fig, paths[-1])
    return paths
