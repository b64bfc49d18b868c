"""What the OOD benchmark compares: its methods, sets and protocol (the labels are the suite's), the feature
stores it reads (built by ``ood-data`` when missing), and the two statistics it adds to
``evaluate_probe``'s: separation AUROC and the paired bootstrap difference of two scores
(which the suite's runner uses too)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from benchmarks.ood_data.layout import OOD_KINDS, STORES

METHODS = (
    "PROBE",
    "PROBE network alone",
    "novelty",
    "ensemble E std",
    "ensemble F std",
    "LLPR",
    "GMM NLL",
    "latent distance",
)
SETS = tuple(f"ood_{kind}" for kind in OOD_KINDS)
#: results of this protocol compare every method at one operating point (older files did not)
PROTOCOL = "one operating point"


def stores_of(backbone):
    needed = {name: STORES / f"{backbone}_{name}.h5" for name in ("train", "heldout", *SETS)}
    if not all(p.exists() for p in needed.values()):
        cmd = [sys.executable, "-m", "benchmarks", "ood-data", "--backbone", backbone, "--stage", "all"]
        print("building:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return needed


def _separation(in_scores, out_scores):
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    s = np.r_[in_scores, out_scores]
    s = np.where(np.isfinite(s), s, np.nanmax(np.where(np.isfinite(s), s, np.nan)) * 10 + 1)
    return float(roc_auc_score(y, s))


def paired_difference(unreliable, score_a, score_b, n_bootstrap=1000, seed=0):
    """AUROC and AURC of score_a minus score_b on the same structures, with a paired 95 %
    bootstrap interval (both scores resampled together)."""
    from sklearn.metrics import roc_auc_score

    from probe_base.report.metrics import aurc

    rng = np.random.default_rng(seed)
    n = len(unreliable)
    diffs = {"auroc": [], "aurc": []}
    point = {
        "auroc": roc_auc_score(unreliable, score_a) - roc_auc_score(unreliable, score_b),
        "aurc": aurc(score_a, unreliable) - aurc(score_b, unreliable),
    }
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        if unreliable[idx].min() == unreliable[idx].max():
            continue
        diffs["auroc"].append(
            roc_auc_score(unreliable[idx], score_a[idx]) - roc_auc_score(unreliable[idx], score_b[idx])
        )
        diffs["aurc"].append(aurc(score_a[idx], unreliable[idx]) - aurc(score_b[idx], unreliable[idx]))
    return {k: (float(point[k]), *map(float, np.percentile(v, [2.5, 97.5]))) for k, v in diffs.items()}
