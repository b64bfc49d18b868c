"""One suite result as Markdown (``<backbone>_<dataset>[_<size>].md``): the backbones'
errors, wall time, every evaluation's metrics with intervals, the operating point, the
verdict against each ensemble signal, OOD detection and the cost table."""

from __future__ import annotations

import numpy as np

from benchmarks.report import interval
from benchmarks.suite.protocol import METHODS, METRICS


def verdict(metrics, against="ensemble E std"):
    """One sentence: does PROBE beat this ensemble signal, intervals apart?"""
    probe, ens = metrics["PROBE"], metrics.get(against)
    if ens is None:
        return f"no {against} to compare with"
    parts = []
    for metric, higher_is_better in (("auroc", True), ("aurc", False)):
        p, e = probe[metric], ens[metric]
        better = p[0] > e[0] if higher_is_better else p[0] < e[0]
        apart = p[1] > e[2] if higher_is_better else p[2] < e[1]
        worse_apart = p[2] < e[1] if higher_is_better else p[1] > e[2]
        if better and apart:
            parts.append(f"PROBE beats it on {metric.upper()} (intervals do not overlap)")
        elif better:
            parts.append(f"PROBE is ahead on {metric.upper()} but the intervals overlap")
        elif worse_apart:
            parts.append(f"it beats PROBE on {metric.upper()} (intervals do not overlap)")
        else:
            parts.append(f"it is ahead on {metric.upper()} but the intervals overlap")
    return f"vs {against}: " + "; ".join(parts) + "."


def markdown(payload):
    b, d, s = payload["backbone"], payload["dataset"], payload["size"]
    lines = [
        f"# {b} on {d} ({s} backbone, {len(payload['models'])} seeds)",
        "",
        f"`python -m benchmarks run --backbone {b} --dataset {d} --size {s}`",
        "",
    ]
    errors = payload.get("backbone_errors", {})
    if errors:
        lines += [
            "Backbones on the whole held-out set (the first is the probed one; force errors are stored for it only):",
            "",
            "| model | energy MAE (meV) | mean signed energy error (meV) | force RMSE (meV/Å) | "
            "mean atom force error (meV/Å) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {m['energy_mae_meV']:.1f} | {m['energy_mean_signed_error_meV']:+.1f} | "
            + (
                f"{m['force_rmse_meV_per_A']:.1f} | {m['atom_force_error_mean_meV_per_A']:.1f} |"
                if "force_rmse_meV_per_A" in m
                else "- | - |"
            )
            for name, m in errors.items()
        ]
        lines += [""]
    if "wall" in payload:
        w = payload["wall"]
        lines += [
            f"Wall time of this run: {w['total_seconds'] / 60:.1f} min (training "
            f"{w['training_seconds'] / 60:.1f}, extraction {w['extraction_seconds'] / 60:.1f}, "
            f"probe fits + evaluation {w['fit_and_evaluation_seconds'] / 60:.1f}, cost table "
            f"{w['cost_table_seconds'] / 60:.1f}; {w['torch_threads']} torch thread).",
            "",
        ]
    for key, ev in payload["evaluations"].items():
        label = ev["label"]
        in_domain = (
            f", {100 * ev['in_domain_fraction']:.0f} % inside the backbone's domain"
            if "in_domain_fraction" in ev
            else ""
        )
        lines += [
            f"## {key}: unreliable = {label['target']} error > {label['threshold']:.4g} "
            f"({ev['n_structures']} structures, {100 * ev['unreliable_fraction']:.0f} % unreliable"
            f"{in_domain})",
            "",
            "| method | " + " | ".join(m.upper().replace("_", "-") for m in METRICS) + " |",
            "|---" * (len(METRICS) + 1) + "|",
        ]
        for method in METHODS:
            if method not in ev["metrics"]:
                continue
            m = ev["metrics"][method]
            lines.append(
                f"| {method} | "
                + " | ".join(interval(m[k]) if k in m and np.isfinite(m[k][0]) else "-" for k in METRICS)
                + " |"
            )
        if "default_minus_network" in ev:
            d = ev["default_minus_network"]
            lines += [
                "",
                "Default (domain test on) minus the network alone, paired bootstrap: AUROC "
                f"{d['auroc'][0]:+.4f} [{d['auroc'][1]:+.4f}, {d['auroc'][2]:+.4f}], AURC "
                f"{d['aurc'][0]:+.4f} [{d['aurc'][1]:+.4f}, {d['aurc'][2]:+.4f}]",
            ]
        for map_name, q in (ev.get("atom_maps") or {}).items():
            lines.append(
                f"Per-atom map '{map_name}': top atom among the 3 worst forces in "
                f"{100 * q['hit_rate']:.0f}% of {q['n_structures']} structures (random "
                f"{100 * q['random_rate']:.0f}%), within-structure Spearman {q['spearman']:.2f}  "
            )
        if ev.get("decisions"):
            lines += ["", decisions_markdown(ev["decisions"], ev.get("paired_at_operating_point"))]
        if 0 < ev["unreliable_fraction"] < 1:
            lines += (
                [""]
                + [
                    f"**{verdict(ev['metrics'], against)}**  "
                    for against in ("ensemble E std", "ensemble F std")
                    if against in ev["metrics"]
                ]
                + [""]
            )
        else:
            lines += ["", "(one class only: ranking metrics are undefined on this set)", ""]
        if "ood_detection" in ev:
            od = ev["ood_detection"]
            lines += [
                f"OOD detection ({od['n_ood']} OOD vs {od['n_in_distribution']} held-out "
                f"structures; mean P(reliable) {od['mean_p_reliable_ood']:.3f} OOD vs "
                f"{od['mean_p_reliable_in_distribution']:.3f} held-out; flagged by the decision rule: "
                f"{100 * od['flagged_ood']:.0f} % vs {100 * od['flagged_in_distribution']:.0f} %):",
                "",
                "| signal | AUROC (OOD vs held-out) | AUPRC |",
                "|---|---|---|",
            ]
            lines += [
                f"| {name} | {interval(m['auroc'])} | {interval(m['auprc'])} |" for name, m in od["metrics"].items()
            ]
            lines += [""]
    for key, why in payload["skipped"].items():
        lines += [f"- {key}: not evaluated: {why}"]
    c = payload["cost"]
    rounds = c.get("rounds", 3)
    lines += [
        "",
        f"## Cost (same structures; {rounds} interleaved rounds: times are minima, ratios "
        "medians of the per-round ratios)",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| backbone pass, {c['structures']} structures | {c['backbone_seconds']:.2f} s |",
        f"| hooks overhead (backbone + feature capture) | x{c['hook_overhead_ratio']:.3f} |",
        f"| ensemble of {c['n_members']} / one backbone | x{c['ensemble_ratio']:.2f} |",
    ]
    if "probe_seconds" in c:
        lines += [
            f"| probe inference / backbone pass | {100 * c['probe_overhead_ratio']:.1f} % |",
            f"| probe training epoch on cached features | {c['probe_epoch_seconds_cached_features']:.2f} s |",
            f"| epoch that re-runs the backbone (official code) / cached epoch | "
            f"x{c['epoch_speedup_cached_vs_rerun']:.1f} |",
        ]
    return "\n".join(lines) + "\n"


def rate_cell(rate, interval):
    """A rate in percent, with its interval when given; "-" when undefined."""
    if rate is None or not np.isfinite(rate):
        return "-"
    return f"{100 * rate:.1f} %" + (f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else "")


def decisions_markdown(decisions, paired=None) -> str:
    """Every method at PROBE's operating point: measured false alarms and detection."""
    lines = [
        "At one operating point (PROBE's rule; every other score cut at the same false-alarm rate on the "
        "same calibration structures; 95 % intervals):",
        "",
        "| method | false alarms (reliable flagged) | detected (unreliable flagged) | rule |",
        "|---|---|---|---|",
    ]
    for name, d in decisions.items():
        lines.append(
            f"| {name} | {rate_cell(d['reliable_flagged'], d.get('reliable_flagged_interval'))} | "
            f"{rate_cell(d['unreliable_flagged'], d.get('unreliable_flagged_interval'))} | {d['rule']} |"
        )
    for comparison, d in (paired or {}).items():
        det, fa = d["detection"], d["false_alarm"]
        lines.append(
            f"\nPROBE minus {comparison} ({d['other']}), paired bootstrap: detection "
            f"{100 * det[0]:+.1f} points [{100 * det[1]:+.1f}, {100 * det[2]:+.1f}], false alarms "
            f"{100 * fa[0]:+.1f} [{100 * fa[1]:+.1f}, {100 * fa[2]:+.1f}]  "
        )
    return "\n".join(lines) + "\n"
