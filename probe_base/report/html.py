"""``report.html``: an evaluation on one self-contained page.

The label and data, the metrics of PROBE and every baseline with 95 % intervals, the
plots, the realised risk and coverage of a calibrated threshold, and the least-trusted
structures drawn atom by atom, coloured by the per-atom map. Images are embedded as
base64 data (the plots PNG, the structures SVG) and the style is inline: the page opens offline and can be mailed.

This module writes the page and its sections; the least-trusted structures are in
``probe_base.report.structures`` (their choice), ``probe_base.report.structure_drawing``
(their pictures) and ``probe_base.report.structures_html`` (their section).
"""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

import numpy as np

from probe_base.artifact import atomic_write
from probe_base.labels import TARGETS, UNITS
from probe_base.report.structures_html import least_trusted_section, png_data_uri

N_LEAST_TRUSTED = 12
#: (key, heading, tooltip, higher is better); columns appear when any method has them
#: (metrics.json has every metric; the page keeps the table to one screen's width)
METRIC_COLUMNS = [
    ("auroc", "AUROC", "area under the ROC curve of finding unreliable structures", True),
    ("auprc", "AUPRC", "area under the precision-recall curve (unreliable = positive)", True),
    ("aurc", "AURC", "area under the risk-coverage curve", False),
    ("e_aurc", "E-AURC", "AURC minus that of a perfect ranking", False),
    ("risk@80", "risk@80%", "selective risk when the 80 % most trusted are accepted", False),
    ("risk@90", "risk@90%", "selective risk when the 90 % most trusted are accepted", False),
    ("spearman", "Spearman", "rank correlation of the risk score with the error", True),
    ("ece", "ECE", "expected calibration error of P(reliable)", False),
    ("brier", "Brier", "Brier score of P(reliable)", False),
]
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1280px;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h3{font-size:1.05em;margin:1.2em 0 .2em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.8em}.muted{color:#666;font-size:.9em}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.82em}th,td{padding:.3em .45em;border-bottom:1px solid #e3e3e3;
text-align:right;white-space:nowrap}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
td small{color:#777}td.best{font-weight:700;background:#eef6ee}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:.2em 1.2em}dl.summary dt{color:#555}
dl.summary dd{margin:0}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:1em}
.plots figure{margin:0}
.plots img{width:100%;border:1px solid #eee}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:1em;margin-top:1em}
.card{border:1px solid #ddd;border-radius:6px;padding:.5em;background:#fcfcfc}
.card img{width:100%}.card .facts{font-size:.85em}.bad{color:#b00020;font-weight:600}
.good{color:#1b7a2f;font-weight:600}.note{background:#fff7e0;border-left:4px solid #e0a800;padding:.5em .8em}
"""


def write_report(evaluation, output_dir, plots=(), n_structures=N_LEAST_TRUSTED) -> Path:
    """Write ``output_dir/report.html``; ``plots``: PNG files to embed. Returns its path."""
    output_dir = Path(output_dir)
    arrays = evaluation["arrays"]
    page = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>PROBE evaluation report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>PROBE evaluation report</h1>",
        f'<p class="muted">written {datetime.now().strftime("%Y-%m-%d %H:%M")} by mlip-probe; '
        "self-contained: every image is embedded in this file.</p>",
        _summary_section(evaluation),
        _metrics_section(evaluation["metrics"]),
        _decisions_section(evaluation.get("decisions")),
        _selective_section(evaluation.get("selective")),
        _plots_section(plots),
        "<h2>Least-trusted structures</h2>"
        + _atom_maps_section(evaluation.get("atom_maps"), evaluation.get("atom_maps_skipped"))
        + least_trusted_section(evaluation, arrays, n_structures),
        "</body></html>",
    ]
    path = output_dir / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text("\n".join(page), encoding="utf-8"))
    return path


# ---- sections -------------------------------------------------------------------------
def _summary_section(evaluation) -> str:
    label = evaluation["label"]
    target, unit = label["target"], UNITS.get(label["target"], "")
    data = evaluation["arrays"]["data"]
    identity = getattr(data, "attrs", None) or {}
    fingerprint = identity.get("fingerprint", {})
    rows = [
        ("reliable means", f"{html.escape(TARGETS.get(target, target))} &le; <b>{label['threshold']:.4g} {unit}</b>"),
        ("structures evaluated", f"{evaluation['n_structures']} ({int(np.sum(data.n_atoms))} atoms)"),
        ("unreliable", f"{100 * evaluation['unreliable_fraction']:.1f} %"),
    ]
    if label.get("offset"):
        rows.append(("energy offset removed", f"{label['offset']:.4g} {unit}"))
    domain = evaluation.get("domain")
    if domain:
        rows.append(
            (
                "domain test",
                f"{100 * domain['flagged_fraction']:.1f} % of these structures outside "
                f"(false-alarm rate &alpha; = {domain['alpha']:g}, threshold from "
                f"{domain['n_calibration']} structures; reference: "
                f"{html.escape(str(domain['reference']))}); outside, P(reliable) = 0",
            )
        )
    elif "in_domain_fraction" in evaluation:
        rows.append(("inside the probe's domain", f"{100 * evaluation['in_domain_fraction']:.1f} %"))
    if identity.get("input"):
        selection = identity.get("index", ":")
        rows.append(
            (
                "input file",
                f"<code>{html.escape(identity['input'])}</code>"
                + (
                    ""
                    if selection == ":"
                    else f", frames <code>{html.escape(selection)}</code> "
                    "(frame numbers below count within this selection)"
                ),
            )
        )
    if fingerprint:
        backbone = fingerprint.get("adapter", "?")
        layers = ", ".join(fingerprint.get("layers", []))
        n_models = len(fingerprint.get("model_files_sha256", [])) or 1
        rows.append(
            (
                "backbone",
                f"{html.escape(str(backbone))}, {n_models} model file(s), "
                f"features of {html.escape(layers) or 'its default layers'}",
            )
        )
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<h2>Label and data</h2><dl class="summary">{body}</dl>'


def _metrics_section(metrics: dict) -> str:
    columns = [c for c in METRIC_COLUMNS if any(c[0] in table for table in metrics.values())]
    best = {}
    for key, _, _, higher in columns:
        values = {m: t[key][0] for m, t in metrics.items() if key in t and np.isfinite(t[key][0])}
        if values:
            best[key] = (max if higher else min)(values.values())
    head = "".join(
        f'<th title="{html.escape(tip)}">{name} {"&uarr;" if higher else "&darr;"}</th>'
        for _, name, tip, higher in columns
    )
    rows = []
    for method, table in metrics.items():
        cells = [f"<td>{html.escape(method)}</td>"]
        for key, *_ in columns:
            if key in table and np.isfinite(table[key][0]):
                value, low, high = table[key]
                mark = ' class="best"' if np.isclose(value, best.get(key, np.nan)) else ""
                cells.append(f"<td{mark}>{value:.3f}<br><small>[{low:.3f}, {high:.3f}]</small></td>")
            else:
                cells.append("<td>&ndash;</td>")
        rows.append(f'<tr data-method="{html.escape(method)}">{"".join(cells)}</tr>')
    return (
        '<h2>Metrics</h2><p class="muted">Each method\'s risk score ranks the same structures; '
        "value and 95 % bootstrap interval; &uarr;/&darr;: higher/lower is better; the best "
        "value of each column is shaded. ECE and Brier need a probability: only PROBE's scores are one.</p>"
        f'<div class="scroll"><table id="metrics"><thead><tr><th>method</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _pct(value) -> str:
    return "&ndash;" if value is None or not np.isfinite(value) else f"{100 * value:.1f} %"


def _decisions_section(decisions) -> str:
    """What each method's default rule flags: overall, among the unreliable, the reliable."""
    if not decisions:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_pct(d['flagged'])}</td>"
        f"<td>{_pct(d['unreliable_flagged'])}</td><td>{_pct(d['reliable_flagged'])}</td>"
        f'<td style="text-align:left">{html.escape(d["rule"])}</td></tr>'
        for name, d in decisions.items()
    )
    return (
        '<h3>At one operating point</h3><p class="muted">PROBE flags with the rule stored in the probe; '
        "every other score is cut at the same false-alarm rate on the same calibration structures. "
        "Measured here: the share of unreliable structures each flags (detection) and of reliable "
        "ones (false alarms); a good method flags the unreliable and spares the reliable.</p>"
        '<div class="scroll"><table id="decisions"><thead><tr><th>method</th><th>flags</th>'
        '<th>of the unreliable</th><th>of the reliable</th><th style="text-align:left">rule</th>'
        f"</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _atom_maps_section(atom_maps, skipped=None) -> str:
    """How well each per-atom map finds the atoms whose forces are worst (and which maps
    could not be scored, and why)."""
    if not atom_maps:
        return ""
    not_scored = "".join(
        f'<p class="muted">Not scored: {html.escape(name)}: {html.escape(why)}.</p>'
        for name, why in (skipped or {}).items()
    )
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_pct(q['hit_rate'])}</td><td>{_pct(q['random_rate'])}</td>"
        f"<td>{q['spearman']:.2f}</td><td>{q['n_structures']}</td></tr>"
        for name, q in atom_maps.items()
    )
    return (
        '<p class="muted">Per-atom maps against the actual force errors: how often the map\'s top '
        "atom is one of the 3 atoms with the largest force error (a random atom: the second "
        "column), and the rank correlation within a structure.</p>"
        '<table id="atom-maps"><thead><tr><th>per-atom map</th><th>top atom among worst 3</th>'
        "<th>random atom</th><th>Spearman</th><th>structures</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{not_scored}"
    )


def _selective_section(summary) -> str:
    if not summary:
        return (
            '<h2>Calibrated threshold</h2><p class="muted">The probe has no calibrated '
            "threshold; <code>probe calibrate</code> chooses one with a risk guarantee.</p>"
        )
    sgr = summary["method"] == "sgr"
    guarantee = (
        f"selective risk &le; {_pct(summary['target_risk'])} with probability &ge; {1 - summary['delta']:.3g} (SGR)"
        if sgr
        else f"expected rate of accepted-and-unreliable &le; {_pct(summary['target_risk'])} (CRC)"
    )
    rule = (
        f"P(reliable) &ge; {summary['threshold']:.4g} is accepted"
        if summary["threshold"] <= 1
        else "every prediction is rejected (no threshold met the target on the calibration set)"
    )
    interval = summary.get("risk_interval")
    risk = _pct(summary["risk"]) + (f" [{_pct(interval[0])}, {_pct(interval[1])}]" if interval else "")
    meets = summary.get("meets_target")
    verdict = (
        ""
        if meets is None
        else f' <span class="{"good" if meets else "bad"}">'
        f"{'meets the target' if meets else 'misses the target'}</span>"
    )
    rows = [
        ("rule", rule),
        ("guarantee", guarantee),
        (
            "calibration",
            f"{summary['n_calibration']} structures, coverage "
            f"{_pct(summary['calibration_coverage'])}, selective risk "
            f"{_pct(summary['calibration_risk'])}"
            + (f", bound {_pct(summary['risk_bound'])}" if summary.get("risk_bound") is not None else ""),
        ),
        (
            "held out",
            f"{summary['n_structures']} structures ({summary['n_left_out_calibration']} calibration ones left out)",
        ),
        ("realised coverage", _pct(summary["coverage"])),
        ("realised selective risk", risk + " (95 % Clopper-Pearson)" * bool(interval) + verdict),
        ("accepted and unreliable", _pct(summary["accepted_unreliable_rate"]) + " of all"),
    ]
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<h2>Calibrated threshold</h2><dl class="summary" id="selective">{body}</dl>'


def _plots_section(plots) -> str:
    images = [
        f'<figure><img src="{png_data_uri(Path(p).read_bytes())}" alt="{html.escape(Path(p).stem)}"></figure>'
        for p in plots
    ]
    return f'<h2>Plots</h2><div class="plots">{"".join(images)}</div>' if images else ""
