"""The probe recipes the ablation compares (``RECIPES``) and one run of a recipe: fit on one
half of the held-out store, score PROBE, the ensemble energy and force std and latent
distance on the other half; with the summaries and timing the experiment reports."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from probe_base.labels import LabelSpec
from probe_base.net.classifier import ProbeClassifier
from probe_base.report.baselines import LatentDistance
from probe_base.report.metrics import aurc, ece
from probe_base.workflow.fit import split_holdout

# name -> (which layers: "last" | "all", classifier parameters)
RECIPES = {
    "paper": ("last", dict(preset="paper")),
    "default": ("all", dict()),
    "default-last-layer": ("last", dict()),
    "single-split": ("all", dict(cv_folds=1)),
    "no-element-identity": ("all", dict(element_embedding=False)),
    "per-element-norm": ("all", dict(per_element_norm=True)),
    "+latent-distance": ("all", dict(extras=("energy_per_atom", "log_n_atoms", "latent_distance"))),
    "no-energy-input": ("all", dict(extras=("log_n_atoms",))),
}


def last_layer_columns(adapter):
    end = int(np.sum(adapter.widths))
    return np.arange(end - adapter.widths[-1], end)


def classifier_for(params, seed):
    params = dict(params)
    preset = params.pop("preset", None)
    if preset:
        return ProbeClassifier.from_preset(preset, seed=seed, **params)
    return ProbeClassifier(seed=seed, **params)


def run_one(data, adapter, layers, params, split_seed, target, threshold, remove_offset=False):
    fit_idx, eval_idx = split_holdout(len(data), 0.5, split_seed)
    view = data
    if layers == "last":
        view = dataclasses.replace(data, features=np.ascontiguousarray(data.features[:, last_layer_columns(adapter)]))
    fit, ev = view.subset(fit_idx), view.subset(eval_idx)
    spec = LabelSpec(
        target, threshold=threshold, quantile=None if threshold else 0.5, remove_offset=remove_offset
    ).resolved_on(fit)
    fit_err = spec.errors(fit)
    y = spec.reliable(fit_err)
    ev_err = spec.errors(ev)
    bad = (ev_err > spec.threshold).astype(int)
    t0 = time.perf_counter()
    clf = classifier_for(params, split_seed).fit(fit, y)
    fit_seconds = time.perf_counter() - t0
    epochs = sum(len(h) for h in clf.history_)
    p = clf.predict_proba(ev)[:, 1]
    from sklearn.metrics import roc_auc_score

    row = {
        "probe_auroc": roc_auc_score(bad, 1 - p),
        "probe_aurc": aurc(1 - p, bad),
        "probe_ece": ece(p, 1 - bad),
        "fit_seconds": fit_seconds,
        "epochs": epochs,
        "threshold": spec.threshold,
        "unreliable_fraction": float(bad.mean()),
    }
    if ev.member_energies is not None:
        s = ev.member_energies.std(1)
        row.update(ensemble_auroc=roc_auc_score(bad, s), ensemble_aurc=aurc(s, bad))
    if ev.member_force_std is not None:  # the natural baseline for force labels
        f = ev.member_force_std
        row.update(ensemble_force_auroc=roc_auc_score(bad, f), ensemble_force_aurc=aurc(f, bad))
    d = LatentDistance().fit(fit).distance(ev)
    row.update(latent_auroc=roc_auc_score(bad, d), latent_aurc=aurc(d, bad))
    row["_scores"] = (1 - p, bad, ev_err, p, ev.member_energies.std(1) if ev.member_energies is not None else None)
    return row


def summarise(rows, key):
    values = np.array([r[key] for r in rows if key in r])
    if not len(values):
        return None
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "ci95": [float(values.mean() - half), float(values.mean() + half)],
        "n": int(len(values)),
    }


def probe_inference_seconds(clf, data, n):
    sub = data.subset(np.arange(min(n, len(data))))
    clf.predict_proba(sub)
    t0 = time.perf_counter()
    clf.predict_proba(sub)
    return time.perf_counter() - t0
