"""What the suite evaluates: the labels (``LABELS``), the methods and metrics of its tables,
the out-of-distribution set of each training set, and the share of the fitting half that
calibrates the decision rule."""

from __future__ import annotations

from benchmarks.common import CACHE, DATA

#: the default labels (absolute tolerances, ``probe_base.labels.DEFAULT_TOLERANCES``: 1 kcal/mol
#: per structure, 0.1 eV/Å force RMSE) and the official PROBE code's median label
LABELS = {
    "energy_tolerance": dict(target="energy"),
    "force_rmse_tolerance": dict(target="force_rmse"),
    "energy_median": dict(target="energy", quantile=0.5),
}
METHODS = (
    "PROBE",
    "PROBE network alone",
    "novelty",
    "LLPR",
    "GMM NLL",
    "ensemble E std",
    "ensemble F std",
    "latent distance",
    "random",
)
METRICS = ("auroc", "auprc", "aurc", "e_aurc", "spearman", "ece")


def ood_file(dataset):
    """The out-of-distribution structures for a backbone trained on ``dataset`` (or None)."""
    if dataset != "ethanol":
        return None
    import ase.io

    path = CACHE / "methanol_ood.xyz"
    if not path.exists():
        frames = [
            a
            for a in ase.io.read(DATA / "ethanol" / "test_eth_meth.xyz", ":")
            if a.info.get("config_type") == "methanol"
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(path, frames, format="extxyz")
    return path


def calibration_fraction(store, label, eval_fraction=0.5, split_seed=0, false_alarm=0.05):
    """The share of the fitting half that sets the decision cut: the default 0.25, or more
    (at most 0.5) where that leaves too few reliable calibration structures for the rate.
    Chosen from the fitting half's label counts alone."""
    from probe_base.decision import DEFAULT_CALIBRATION_FRACTION, min_reliable_calibration
    from probe_base.store import load_store
    from probe_base.workflow.fit import split_holdout

    data = load_store(store)
    fit = data.subset(split_holdout(len(data), eval_fraction, split_seed)[0])
    resolved = label.resolved_on(fit)
    n_reliable = int((resolved.errors(fit) <= resolved.threshold).sum())
    needed = min_reliable_calibration(false_alarm) + 1
    return float(min(0.5, max(DEFAULT_CALIBRATION_FRACTION, needed / max(n_reliable, 1))))
