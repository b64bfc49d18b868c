"""``probe calibrate``: a risk-controlled P(reliable) threshold chosen on a labelled
feature store and written into the ``.probe`` file, and its realised risk measured later.

``calibrate_probe`` runs one of ``probe_base.selective``'s methods (``sgr``, ``crc``) on
structures the probe was not fitted on (``calibration_subset``) and writes the threshold
into the file (``info["decision_threshold"]``, used by ``attach`` and the watchdog, and
``info["selective"]`` with the method, ``target_risk``, ``delta``, the calibration coverage
and the calibration structures). ``selective_evaluation`` measures the realised risk and
coverage on structures used neither for fitting nor for calibrating, for ``probe
evaluate``; ``format_selective`` prints it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from probe_base.decision import DecisionRule
from probe_base.errors import InputError
from probe_base.scoring import decision_threshold
from probe_base.selective import RiskControl, binomial_interval, choose_threshold


def update_probe_info(path, updates: dict, output=None) -> Path:
    """``probe_base.artifact.rewrite_info``: ``updates`` merged into the file's ``info``."""
    from probe_base.artifact import rewrite_info

    return rewrite_info(path, updates, output)


def calibration_subset(artifact, data, fraction=None, seed=0):
    """Indices of ``data`` to calibrate on. On the probe's own fitting store only its
    held-out ``eval_indices`` qualify; by default half of them (the other half stays for
    ``probe evaluate``). On another store: all of it by default."""
    info = artifact.info.get("info", {})
    if info.get("store_identity") == data.attrs:
        candidates = np.asarray(info.get("eval_indices") or [], dtype=np.int64)
        if not len(candidates):
            raise InputError(
                "this is the store the probe was fitted on, with no held-out part: "
                "calibrate on another labelled store or refit with --eval-fraction"
            )
        fraction = 0.5 if fraction is None else fraction
    else:
        candidates = np.arange(len(data))
        fraction = 1.0 if fraction is None else fraction
    if not 0 < fraction <= 1:
        raise InputError(f"calibration fraction must lie in (0, 1], got {fraction}")
    n = max(1, int(round(fraction * len(candidates))))
    chosen = np.random.default_rng(seed).permutation(candidates)[:n]
    return np.sort(chosen)


def calibrate_probe(
    probe_path,
    store_path,
    target_risk: float,
    delta: float = 0.05,
    method: str = "sgr",
    output=None,
    calibration_fraction=None,
    seed=0,
    allow_mismatch=False,
) -> RiskControl:
    """Choose the threshold on a labelled feature store; when one meets the target, write the
    probe with it as its decision rule to ``output`` (None: the probe file itself; the CLI
    asks for --output or --overwrite). A target no threshold meets writes nothing: the probe
    keeps its rule."""
    from probe_base.artifact import load_probe
    from probe_base.scoring import score
    from probe_base.store import load_store, require_labels

    artifact = load_probe(probe_path)
    data = require_labels(load_store(store_path), store_path, "calibrate")
    artifact.check_backbone(data.fingerprint, allow_mismatch, source=str(probe_path))
    indices = calibration_subset(artifact, data, calibration_fraction, seed)
    calib = data.subset(indices)
    errs = artifact.label.errors(calib)
    reliable = (errs <= artifact.label.threshold).astype(np.int64)
    p = score(artifact, calib).p_reliable  # what users get: 0 outside the domain
    control = choose_threshold(p, reliable, target_risk, delta, method)
    previous = decision_threshold(artifact)
    record = control.to_dict()
    record.update(
        {
            "calibration_store": str(Path(store_path).resolve()),
            "calibration_store_identity": data.attrs,
            "calibration_source_index": [int(i) for i in calib.source_index],
            "previous_decision_threshold": previous,
        }
    )
    if control.achievable:
        rule = DecisionRule(control.threshold, None, method, control.n_calibration, None, float(target_risk))
        updates = {"decision": rule.to_dict(), "decision_threshold": control.threshold, "selective": record}
        update_probe_info(probe_path, updates, output)
    return control


def selective_evaluation(artifact, data, p_reliable, unreliable):
    """Realised coverage and selective risk at the calibrated threshold on ``data``, leaving
    out the calibration structures when ``data`` is the calibration store. None when the
    probe was never calibrated."""
    record = artifact.info.get("info", {}).get("selective")
    if not record:
        return None
    p_reliable = np.asarray(p_reliable, dtype=np.float64)
    unreliable = np.asarray(unreliable, dtype=np.int64)
    keep = np.ones(len(p_reliable), dtype=bool)
    source_index = getattr(data, "source_index", None)
    if record.get("calibration_store_identity") == getattr(data, "attrs", None) and source_index is not None:
        keep = ~np.isin(source_index, record.get("calibration_source_index", []))
    threshold = float(record["threshold"])
    accepted = keep & (p_reliable >= threshold)
    n, n_acc = int(keep.sum()), int(accepted.sum())
    n_bad = int(unreliable[accepted].sum())
    risk = n_bad / n_acc if n_acc else None
    joint = n_bad / n if n else None
    if record["method"] == "crc":
        meets = None if joint is None else joint <= record["target_risk"]
    else:
        meets = None if risk is None else risk <= record["target_risk"]
    return {
        "method": record["method"],
        "target_risk": record["target_risk"],
        "delta": record["delta"],
        "threshold": threshold,
        "calibration_coverage": record["coverage"],
        "calibration_risk": record["risk"],
        "risk_bound": record["risk_bound"],
        "n_calibration": record["n_calibration"],
        "n_structures": n,
        "n_left_out_calibration": int((~keep).sum()),
        "n_accepted": n_acc,
        "coverage": n_acc / n if n else None,
        "risk": risk,
        "risk_interval": list(binomial_interval(n_bad, n_acc)) if n_acc else None,
        "accepted_unreliable_rate": joint,
        "meets_target": meets,
    }


def format_selective(summary: dict) -> str:
    """Two lines for ``probe evaluate``."""

    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}%"

    what = "selective risk" if summary["method"] == "sgr" else "accepted-and-unreliable rate"
    guarantee = (
        f"{what} <= {pct(summary['target_risk'])} with probability >= {1 - summary['delta']:.3g}"
        if summary["method"] == "sgr"
        else f"expected {what} <= {pct(summary['target_risk'])}"
    )
    rule = (
        f"P(reliable) >= {summary['threshold']:.4g} accepted"
        if summary["threshold"] <= 1
        else "every prediction rejected (no threshold met the target)"
    )
    head = (
        f"risk control ({summary['method']}): {rule}; guarantee: {guarantee}; calibration coverage "
        f"{pct(summary['calibration_coverage'])} on {summary['n_calibration']} structures"
    )
    if not summary["n_structures"]:
        return head + "\n  no held-out structures left to measure it on (all were used to calibrate)"
    interval = summary["risk_interval"]
    risk = pct(summary["risk"]) + (f" [{pct(interval[0])}, {pct(interval[1])}]" if interval else "")
    return (
        head + f"\n  held out ({summary['n_structures']} structures, "
        f"{summary['n_left_out_calibration']} calibration ones left out): coverage "
        f"{pct(summary['coverage'])}, selective risk {risk}, accepted-and-unreliable rate "
        f"{pct(summary['accepted_unreliable_rate'])}"
    )
