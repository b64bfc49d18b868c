"""The probe both practice experiments start from: PROBE fitted once on 40 % of a MACE
backbone's held-out store (cached under ``cache/practice``), with P(reliable) and the labels
of the other 60 %."""

from __future__ import annotations

import numpy as np

from benchmarks.backbones import find_or_train
from benchmarks.common import CACHE
from benchmarks.signal_ablation.stores import stores_for

WORK = CACHE / "practice"
# label per dataset: ethanol energies are nearly all accurate (median error ~1 meV), so
# force RMSE is the useful target there; 3BPA uses the official median energy label.
TARGETS = {"ethanol": "force_rmse", "3bpa": "energy"}


def fitted_probe(dataset, seed=0, quantile=0.5):
    """PROBE fitted on 40 % of the dataset's held-out store; (probe path, store, adapter,
    rest indices, P(reliable) and labels of the rest)."""
    from probe_base.artifact import save_probe
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.store import load_store
    from probe_base.workflow.fit import split_holdout

    models = find_or_train("mace", dataset, train=False)
    store_path, adapter = stores_for("mace", dataset, models)[models[0].stem]
    data = load_store(store_path)
    fit_idx, rest_idx = split_holdout(len(data), 0.6, seed)
    probe_path = WORK / f"mace_{dataset}_{TARGETS[dataset]}_q{round(100 * quantile)}.probe"
    fit_data = data.subset(fit_idx)
    label = LabelSpec(target=TARGETS[dataset], quantile=quantile).resolved_on(fit_data)
    if not probe_path.exists():
        clf = ProbeClassifier(seed=seed).fit(fit_data, label.reliable(label.errors(fit_data)))
        WORK.mkdir(parents=True, exist_ok=True)
        save_probe(
            probe_path,
            clf,
            label,
            data.fingerprint,
            {
                "fit_store": str(store_path),
                "store_identity": data.attrs,
                "fit_indices": fit_idx.tolist(),
                "eval_indices": rest_idx.tolist(),
                "decision_threshold": 0.5,
            },
        )
    from probe_base.artifact import load_probe

    artifact = load_probe(probe_path)
    rest = data.subset(rest_idx)
    p = artifact.classifier.predict_proba(rest)[:, 1]
    reliable = (artifact.label.errors(rest) <= artifact.label.threshold).astype(np.int64)
    return probe_path, store_path, adapter, rest_idx, p, reliable, artifact.label
