"""Every method at one operating point: the decision tables of ``probe evaluate``, the
report and the benchmarks.

PROBE flags with its stored rule (``probe_base.decision``), whose cut was set on the
probe's calibration structures for a false-alarm rate. Every other score (the network
alone, novelty, ensemble energy/force std, LLPR, GMM, latent distance) is cut by the same
split-conformal rule, at the same rate, on the same calibration structures. Then each
method's measured false-alarm rate (flagged among reliable) and detection rate (flagged
among unreliable) on the evaluated structures are compared like for like, with paired
bootstrap intervals for PROBE minus the best single-pass baseline and minus the ensemble.
"""

from __future__ import annotations

import numpy as np

from probe_base.decision import DEFAULT_FALSE_ALARM, DecisionError, baseline_cut, flags_above
from probe_base.report.bootstrap import bootstrap_counts
from probe_base.selective import binomial_interval

#: scores that need N backbones; the others are single-pass (they read the one backbone)
ENSEMBLE = ("ensemble E std", "ensemble F std")
NOT_BASELINES = ("PROBE", "PROBE network alone", "random")


def _rates(flagged, unreliable) -> dict:
    bad = unreliable.astype(bool)
    n_good, n_bad = int((~bad).sum()), int(bad.sum())
    false_alarms, detected = int(flagged[~bad].sum()), int(flagged[bad].sum())
    return {
        "flagged": float(flagged.mean()) if len(flagged) else float("nan"),
        "reliable_flagged": false_alarms / n_good if n_good else float("nan"),
        "reliable_flagged_interval": list(binomial_interval(false_alarms, n_good)) if n_good else None,
        "unreliable_flagged": detected / n_bad if n_bad else float("nan"),
        "unreliable_flagged_interval": list(binomial_interval(detected, n_bad)) if n_bad else None,
        "n_reliable": n_good,
        "n_unreliable": n_bad,
    }


def decision_table(rule, p_reliable, in_domain, scores, unreliable, calibration_scores=None, calibration_reliable=None):
    """``{method: rule, cut and measured rates}``. ``scores``: risk scores of the evaluated
    structures (higher = less reliable; "PROBE" is flagged by ``rule`` itself);
    ``calibration_scores``: the same scores on the probe's calibration structures, with
    their labels ``calibration_reliable``; methods without them are left out, so every row
    is at the rule's rate."""
    unreliable = np.asarray(unreliable, dtype=int)
    rate = rule.false_alarm if rule.false_alarm is not None else DEFAULT_FALSE_ALARM
    flags = {"PROBE": rule.flags(p_reliable, in_domain)}
    table = {"PROBE": {"rule": rule.describe(), "cut": rule.cut, "false_alarm_target": rule.false_alarm}}
    if calibration_scores is not None:
        good = np.asarray(calibration_reliable).astype(bool)
        for name, values in scores.items():
            if name in ("PROBE", "random") or name not in calibration_scores:
                continue
            try:
                cut = baseline_cut(np.asarray(calibration_scores[name])[good], rate)
            except DecisionError:
                continue  # too few reliable calibration structures for this rate
            flags[name] = flags_above(values, cut)
            table[name] = {
                "rule": f"> {cut:.4g} (false-alarm rate {rate:g} on the same calibration structures)",
                "cut": cut,
                "false_alarm_target": rate,
            }
    for name, flagged in flags.items():
        table[name].update(_rates(flagged, unreliable))
    return table, flags


def paired_differences(flags, unreliable, n_bootstrap=1000, seed=0) -> dict:
    """PROBE minus the best single-pass baseline and minus the best ensemble score, in
    detection rate and false-alarm rate at the operating point: ``{comparison: {other,
    detection: (diff, low, high), false_alarm: (...)}}`` with 95 % paired bootstrap
    intervals (the same resampled structures for both). "Best": highest detection here."""
    unreliable = np.asarray(unreliable, dtype=bool)
    if "PROBE" not in flags or not unreliable.any() or unreliable.all():
        return {}
    single = [n for n in flags if n not in NOT_BASELINES and n not in ENSEMBLE]
    ensemble = [n for n in flags if n in ENSEMBLE]

    def detection(f):
        return f[unreliable].mean()

    out = {}
    compared = {}
    for comparison, names in (("best single-pass baseline", single), ("ensemble", ensemble)):
        if names:
            other = max(names, key=lambda n: detection(flags[n]))
            compared[comparison] = (other, flags["PROBE"].astype(float) - flags[other].astype(float))
    masks = {"detection": unreliable.astype(float), "false_alarm": (~unreliable).astype(float)}
    # per resample (counts of each structure drawn): the difference of the two rates among
    # the drawn structures of a class = counts @ (difference * class) / counts @ class
    sums = {(c, m): [] for c in compared for m in masks}
    for counts in bootstrap_counts(len(unreliable), n_bootstrap, seed):
        for metric, mask in masks.items():
            drawn = counts @ mask
            for comparison, (_, difference) in compared.items():
                with np.errstate(invalid="ignore", divide="ignore"):
                    sums[comparison, metric].append((counts @ (difference * mask)) / drawn)
    for comparison, (other, difference) in compared.items():
        result = {"other": other}
        for metric, mask in masks.items():
            diff = np.concatenate(sums[comparison, metric]) if sums[comparison, metric] else np.zeros(0)
            diff = diff[np.isfinite(diff)]
            point = float(difference[mask > 0].mean())
            low, high = np.percentile(diff, [2.5, 97.5]) if len(diff) else (np.nan, np.nan)
            result[metric] = (point, float(low), float(high))
        out[comparison] = result
    return out


def _rate_cell(rate, interval) -> str:
    if not np.isfinite(rate):
        return "-".rjust(22)
    tail = f" [{100 * interval[0]:.0f},{100 * interval[1]:.0f}]" if interval else ""
    return f"{100 * rate:.1f}%{tail}".rjust(22)


def format_decisions(table, paired=None) -> str:
    """The decision table as text, then the paired differences."""
    lines = [
        f"{'at one operating point':<22}{'flags':>9}{'false alarms':>22}{'detected':>22}  rule",
    ]
    for name, d in table.items():
        lines.append(
            f"{name:<22}{100 * d['flagged']:>8.1f}%"
            + _rate_cell(d["reliable_flagged"], d.get("reliable_flagged_interval"))
            + _rate_cell(d["unreliable_flagged"], d.get("unreliable_flagged_interval"))
            + f"  {d['rule']}"
        )
    for comparison, d in (paired or {}).items():
        det, fa = d["detection"], d["false_alarm"]
        lines.append(
            f"PROBE - {comparison} ({d['other']}): detection {100 * det[0]:+.1f} points "
            f"[{100 * det[1]:+.1f}, {100 * det[2]:+.1f}], false alarms {100 * fa[0]:+.1f} [{100 * fa[1]:+.1f}, {100 * fa[2]:+.1f}]"
        )
    return "\n".join(lines)
