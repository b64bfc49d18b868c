"""``probe evaluate``: PROBE and the baselines on the same labelled structures, and the
report of it.

``evaluate_probe`` scores a store (only its held-out part when it is the fitting store)
with the probe, its network alone, the novelty and the label-free baselines, at the
decision rule's operating point and over all thresholds; it scores the per-atom maps
against the per-atom force errors, beside the per-element mean and the predicted-force
maps they must beat. ``write_evaluation`` writes metrics.json, the plots and report.html;
``metrics_table`` and ``measured_rule_line`` are the text the CLI prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from probe_base.artifact import atomic_write, load_probe
from probe_base.errors import InputError
from probe_base.net.atom_errors import AtomMapScorer
from probe_base.report.baselines import ReferenceBaselines
from probe_base.report.bootstrap import evaluate_signals, format_table
from probe_base.report.operating_point import decision_table, format_decisions, paired_differences
from probe_base.scoring import score
from probe_base.store import check_store_values, load_store, require_labels
from probe_base.workflow.calibrate import selective_evaluation

NETWORK = "PROBE network alone"
NOVELTY = "novelty"


def _reference_for(info, fit_data):
    """The set the label-free baselines measure against: the backbone's training set
    when the probe was fitted with one, else the fitting set."""
    from probe_base.domain.reference_file import is_reference_file

    path = info.get("reference_store")
    if path and Path(path).exists() and not is_reference_file(path):  # a .reference holds no structures
        return load_store(path)
    return fit_data


def evaluate_probe(
    probe_path, store_path, n_bootstrap=1000, seed=0, allow_mismatch=False, baselines: ReferenceBaselines | None = None
):
    """PROBE and the baselines on the same structures. If ``store_path`` is the store the
    probe was fitted on, only its held-out structures are used. ``baselines``: already
    fitted ones (several stores scored against one reference)."""
    artifact = load_probe(probe_path)
    data = require_labels(load_store(store_path), store_path, "evaluate")
    artifact.check_backbone(data.fingerprint, allow_mismatch, source=str(probe_path))
    info = artifact.info["info"]
    check_store_values(data, store_path)
    same_store = info.get("store_identity") == data.attrs
    fit_data = calibration = None
    if same_store:
        if not info["eval_indices"]:
            raise InputError(
                f"{store_path} is the store {probe_path} was fitted on, with no "
                "held-out part: evaluate on another store or refit with --eval-fraction"
            )
        fit_store = data
    elif Path(info.get("fit_store", "")).exists():
        fit_store = load_store(info["fit_store"])
    else:
        fit_store = None
    if fit_store is not None:
        # the baselines' reference leaves out the decision cut's structures, where every
        # method is cut: a k-NN distance of a structure in its own reference is 0
        fit_indices = np.asarray(info["fit_indices"], dtype=np.int64)
        calibration_indices = np.asarray(info.get("calibration_indices") or [], dtype=np.int64)
        fit_data = fit_store.subset(np.setdiff1d(fit_indices, calibration_indices))
        if len(calibration_indices):
            calibration = fit_store.subset(calibration_indices)
    if same_store:
        data = data.subset(info["eval_indices"])
    errs = artifact.label.errors(data)
    unreliable = (errs > artifact.label.threshold).astype(int)
    result = score(artifact, data)
    scores = {"PROBE": 1 - result.p_reliable}
    if artifact.domain is not None:  # what the domain test changes
        scores[NETWORK] = 1 - result.p_network
        scores[NOVELTY] = result.novelty
    if baselines is None and fit_data is not None:
        baselines = ReferenceBaselines().fit(_reference_for(info, fit_data), fit_data, seed)
    if baselines is not None:
        scores.update(baselines.score(data))
    calibration_scores = calibration_reliable = None
    if calibration is not None:
        at_calibration = score(artifact, calibration)
        calibration_scores = {"PROBE network alone": 1 - at_calibration.p_network}
        if at_calibration.novelty is not None:
            calibration_scores[NOVELTY] = _calibration_novelty(artifact, info, at_calibration.novelty)
        if baselines is not None:
            calibration_scores.update(baselines.score(calibration))
        calibration_reliable = artifact.label.errors(calibration) <= artifact.label.threshold
    rule = artifact.decision
    decisions, flags = decision_table(
        rule, result.p_reliable, result.in_domain, scores, unreliable, calibration_scores, calibration_reliable
    )
    probabilities = {"PROBE": result.p_reliable, NETWORK: result.p_network}
    metrics = evaluate_signals(
        scores,
        unreliable,
        errs,
        {k: v for k, v in probabilities.items() if k in scores},
        n_bootstrap,
        seed,
        threads=torch.get_num_threads(),  # what `probe --threads` set
    )
    atom_maps, atom_maps_skipped = {}, {}
    if data.atom_force_error is not None and np.isfinite(data.atom_force_error).any():
        quality = AtomMapScorer(data.atom_force_error, data.offsets)  # the true side once for every map
        if result.atom_error is not None:
            atom_maps["predicted force error"] = quality(result.atom_error)
        atom_maps["attention importance"] = quality(result.importance)
        if result.atom_novelty is not None:
            atom_maps["atom novelty"] = quality(result.atom_novelty)
        element_mean = per_element_mean_map(fit_data, data)
        if element_mean is not None:  # the baseline a map must beat: "H atoms err most"
            atom_maps["per-element mean error"] = quality(element_mean)
        force_map, why_not = predicted_force_map(data)
        if force_map is not None:  # the simplest baseline: atoms under large forces err most
            atom_maps[PREDICTED_FORCE] = quality(force_map)
        else:
            atom_maps_skipped[PREDICTED_FORCE] = why_not
    domain = None
    if artifact.domain is not None:
        domain = {
            "alpha": artifact.domain.alpha,
            "n_calibration": artifact.domain.n_calibration_,
            "flagged_fraction": float((~result.in_domain).mean()),
            "in_distribution": bool(same_store),
            "reference": info.get("reference_store") or "the fitting set",
        }
    return {
        "label": artifact.label.to_dict(),
        "n_structures": int(len(data)),
        "unreliable_fraction": float(unreliable.mean()),
        "in_domain_fraction": float(result.in_domain.mean()),
        "domain": domain,
        "metrics": metrics,
        "decision_rule": rule.to_dict(),
        "decisions": decisions,
        "paired_at_operating_point": paired_differences(flags, unreliable, n_bootstrap, seed),
        "atom_maps": atom_maps,
        "atom_maps_skipped": atom_maps_skipped,  # map name: why it could not be scored
        "selective": selective_evaluation(artifact, data, result.p_reliable, unreliable),
        "arrays": {
            "errors": errs,
            "unreliable": unreliable,
            "p_reliable": result.p_reliable,
            "p_network": result.p_network,
            "scores": scores,
            "importance": result.importance,
            "in_domain": result.in_domain,
            "flagged": flags["PROBE"],
            "novelty": result.novelty,
            "atom_novelty": result.atom_novelty,
            "atom_error": result.atom_error,
            "data": data,
        },
    }


def _calibration_novelty(artifact, info, in_sample):
    """The novelty of the decision's calibration structures as a new structure would get it.
    Without a reference store they are part of the domain's reference (the fitting set):
    their cross-fitted novelty (against the other folds), stored in the probe, not the
    in-sample one (their own atoms their nearest neighbours)."""
    out_of_fold = getattr(artifact.domain, "out_of_fold_scores_", None)
    fit_indices = info.get("fit_indices") or []
    if info.get("reference_store") or out_of_fold is None or len(out_of_fold) != len(fit_indices):
        return in_sample
    position = {int(index): k for k, index in enumerate(fit_indices)}
    rows = [position[int(index)] for index in info["calibration_indices"]]
    return np.asarray(out_of_fold)[rows] / artifact.domain.threshold_


def per_element_mean_map(fit_data, data):
    """Per structure of ``data``, per atom: the mean force error of that element's atoms in
    ``fit_data`` (None without forces there). A map that knows only the element."""
    if fit_data is None or fit_data.atom_force_error is None:
        return None
    errors = np.asarray(fit_data.atom_force_error, dtype=float)
    z_fit = np.asarray(fit_data.atomic_numbers)
    finite = np.isfinite(errors)
    if not finite.any():
        return None
    overall = float(errors[finite].mean())
    z_eval = np.asarray(data.atomic_numbers, dtype=np.int64)
    element_mean = np.full(max(int(z_fit.max()), int(z_eval.max(initial=0))) + 1, overall)  # unseen: overall
    for z in np.unique(z_fit[finite]):
        element_mean[z] = errors[finite & (z_fit == z)].mean()
    per_atom = element_mean[z_eval]
    return [per_atom[data.offsets[i] : data.offsets[i + 1]] for i in range(len(data))]


PREDICTED_FORCE = "predicted |F|"


def predicted_force_map(data):
    """Per structure of ``data``, per atom: the backbone's predicted force magnitude |F_pred|,
    or (None, why) where the store cannot give it."""
    magnitudes = data.atom_force_pred_norm
    if magnitudes is None:
        return None, (
            "the store was written before predicted forces were kept (store format 3); "
            "re-extract it with `probe extract --overwrite` to score this baseline"
        )
    known = np.isfinite(data.atom_force_error)
    if not np.isfinite(magnitudes[known]).all():
        return None, (
            "the store holds NaN or inf predicted force magnitudes on atoms whose force error is known; "
            "re-extract it with `probe extract --overwrite`"
        )
    magnitudes = np.asarray(magnitudes, dtype=float)
    return [magnitudes[data.offsets[i] : data.offsets[i + 1]] for i in range(len(data))], None


def write_evaluation(evaluation, output_dir) -> Path:
    """metrics.json, the four plots and report.html (all of it on one page); returns the folder."""
    from probe_base.report.html import write_report
    from probe_base.report.plots import write_plots

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    payload = {k: v for k, v in evaluation.items() if k != "arrays"}
    atomic_write(output_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(payload, indent=2)))
    write_report(evaluation, output_dir, write_plots(evaluation, output_dir))
    return output_dir


def measured_rule_line(evaluation) -> str:
    """The decision rule's stated rate next to the rate measured on these structures."""
    probe = evaluation["decisions"]["PROBE"]
    rule = evaluation.get("decision_rule") or {}
    stated = (
        f"stated false-alarm rate <= {100 * rule['false_alarm']:g}%"
        if rule.get("false_alarm") is not None
        else "no stated false-alarm rate"
    )
    low, high = probe.get("reliable_flagged_interval") or (float("nan"), float("nan"))
    where = "in-distribution held-out" if (evaluation.get("domain") or {}).get("in_distribution") else "these"
    return (
        f"decision rule ({stated}): measured on {probe['n_reliable']} reliable {where} structures "
        f"{100 * probe['reliable_flagged']:.1f}% false alarms [95% {100 * low:.1f}, {100 * high:.1f}]; "
        f"{100 * probe['unreliable_flagged']:.1f}% of {probe['n_unreliable']} unreliable detected"
    )


def metrics_table(evaluation) -> str:
    lines = [format_table(evaluation["metrics"])]
    if evaluation.get("decisions"):
        lines += ["", format_decisions(evaluation["decisions"], evaluation.get("paired_at_operating_point"))]
        lines.append(measured_rule_line(evaluation))
    if evaluation.get("domain"):
        d = evaluation["domain"]
        where = "in-distribution held-out" if d["in_distribution"] else "these"
        lines.append(
            f"\ndomain test: {100 * d['flagged_fraction']:.1f}% of {where} structures outside "
            f"(alpha = {d['alpha']:g}, threshold from {d['n_calibration']} structures; "
            f"reference: {d['reference']})"
        )
    for name, q in (evaluation.get("atom_maps") or {}).items():
        lines.append(
            f"per-atom map '{name}': top atom among the 3 worst forces in "
            f"{100 * q['hit_rate']:.0f}% (random {100 * q['random_rate']:.0f}%), "
            f"within-structure Spearman {q['spearman']:.2f}"
        )
    for name, why in (evaluation.get("atom_maps_skipped") or {}).items():
        lines.append(f"per-atom map '{name}': not scored: {why}")
    return "\n".join(lines)
