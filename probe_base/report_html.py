"""``report.html``: an evaluation on one self-contained page.

The label and data, the metrics of PROBE and every baseline with 95 % intervals, the
plots, the realised risk and coverage of a calibrated threshold, and the least-trusted
structures drawn atom by atom, coloured by the per-atom map. Images are embedded as
base64 PNG and the style is inline: the page opens offline and can be mailed.

Structures are drawn with ase's matplotlib plotting (``ase.visualize.plot``): ase and
matplotlib are dependencies already and render on any machine, headless included. OVITO's
PyPI module (3.17) was tried: it needs a system Vulkan driver to render (libvulkan1 and
mesa-vulkan-drivers, absent on a bare node) and adds ~600 MB.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from ase.symbols import Symbols  # noqa: E402
from ase.visualize.plot import Matplotlib as AtomsProjection  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .artifact import atomic_write  # noqa: E402
from .frames import atom_rows, frames_for_structures  # noqa: E402
from .labels import TARGETS  # noqa: E402

N_LEAST_TRUSTED = 12
UNITS = {"energy": "eV", "energy_per_atom": "eV/atom", "force_rmse": "eV/Å", "force_max": "eV/Å"}
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
MAP_COLORS = plt.get_cmap("YlOrRd")
NOVEL_RING = "#1f4fd6"

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
        _least_trusted_section(evaluation, arrays, n_structures),
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
        ("reliable means", f"{html.escape(TARGETS.get(target, target))} &le; "
                           f"<b>{label['threshold']:.4g} {unit}</b>"),
        ("structures evaluated", f"{evaluation['n_structures']} "
                                 f"({int(np.sum(data.n_atoms))} atoms)"),
        ("unreliable", f"{100 * evaluation['unreliable_fraction']:.1f} %"),
    ]
    if label.get("offset"):
        rows.append(("energy offset removed", f"{label['offset']:.4g} {unit}"))
    domain = evaluation.get("domain")
    if domain:
        rows.append(("domain test", f"{100 * domain['flagged_fraction']:.1f} % of these structures outside "
                                    f"(false-alarm rate &alpha; = {domain['alpha']:g}, threshold from "
                                    f"{domain['n_calibration']} structures; reference: "
                                    f"{html.escape(str(domain['reference']))}); outside, P(reliable) = 0"))
    elif "in_domain_fraction" in evaluation:
        rows.append(("inside the probe's domain", f"{100 * evaluation['in_domain_fraction']:.1f} %"))
    if identity.get("input"):
        selection = identity.get("index", ":")
        rows.append(("input file", f"<code>{html.escape(identity['input'])}</code>"
                     + ("" if selection == ":" else f", frames <code>{html.escape(selection)}</code> "
                        "(frame numbers below count within this selection)")))
    if fingerprint:
        backbone = fingerprint.get("adapter", "?")
        layers = ", ".join(fingerprint.get("layers", []))
        n_models = len(fingerprint.get("model_files_sha256", [])) or 1
        rows.append(("backbone", f"{html.escape(str(backbone))}, {n_models} model file(s), "
                                 f"features of {html.escape(layers) or 'its default layers'}"))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<h2>Label and data</h2><dl class="summary">{body}</dl>'


def _metrics_section(metrics: dict) -> str:
    columns = [c for c in METRIC_COLUMNS if any(c[0] in table for table in metrics.values())]
    best = {}
    for key, _, _, higher in columns:
        values = {m: t[key][0] for m, t in metrics.items() if key in t and np.isfinite(t[key][0])}
        if values:
            best[key] = (max if higher else min)(values.values())
    head = "".join(f'<th title="{html.escape(tip)}">{name} {"&uarr;" if higher else "&darr;"}</th>'
                   for _, name, tip, higher in columns)
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
    return ("<h2>Metrics</h2><p class=\"muted\">Each method's risk score ranks the same structures; "
            "value and 95 % bootstrap interval; &uarr;/&darr;: higher/lower is better; the best "
            "value of each column is shaded. ECE and Brier need a probability: only PROBE's scores are one.</p>"
            f'<div class="scroll"><table id="metrics"><thead><tr><th>method</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _pct(value) -> str:
    return "&ndash;" if value is None or not np.isfinite(value) else f"{100 * value:.1f} %"


def _decisions_section(decisions) -> str:
    """What each method's default rule flags: overall, among the unreliable, the reliable."""
    if not decisions:
        return ""
    rows = "".join(f'<tr><td>{html.escape(name)}</td><td>{_pct(d["flagged"])}</td>'
                   f'<td>{_pct(d["unreliable_flagged"])}</td><td>{_pct(d["reliable_flagged"])}</td>'
                   f'<td style="text-align:left">{html.escape(d["rule"])}</td></tr>'
                   for name, d in decisions.items())
    return ('<h3>Default decisions</h3><p class="muted">What each method flags with its default rule '
            "(no labels needed): a good one flags the unreliable and spares the reliable.</p>"
            '<div class="scroll"><table id="decisions"><thead><tr><th>method</th><th>flags</th>'
            "<th>of the unreliable</th><th>of the reliable</th><th style=\"text-align:left\">rule</th>"
            f"</tr></thead><tbody>{rows}</tbody></table></div>")


def _atom_maps_section(atom_maps) -> str:
    """How well each per-atom map finds the atoms whose forces are worst."""
    if not atom_maps:
        return ""
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{_pct(q['hit_rate'])}</td><td>{_pct(q['random_rate'])}</td>"
                   f"<td>{q['spearman']:.2f}</td><td>{q['n_structures']}</td></tr>"
                   for name, q in atom_maps.items())
    return ('<p class="muted">Per-atom maps against the actual force errors: how often the map\'s top '
            "atom is one of the 3 atoms with the largest force error (a random atom: the second "
            "column), and the rank correlation within a structure.</p>"
            '<table id="atom-maps"><thead><tr><th>per-atom map</th><th>top atom among worst 3</th>'
            "<th>random atom</th><th>Spearman</th><th>structures</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _selective_section(summary) -> str:
    if not summary:
        return ("<h2>Calibrated threshold</h2><p class=\"muted\">The probe has no calibrated "
                "threshold; <code>probe calibrate</code> chooses one with a risk guarantee.</p>")
    sgr = summary["method"] == "sgr"
    guarantee = (f"selective risk &le; {_pct(summary['target_risk'])} with probability &ge; "
                 f"{1 - summary['delta']:.3g} (SGR)" if sgr else
                 f"expected rate of accepted-and-unreliable &le; {_pct(summary['target_risk'])} (CRC)")
    rule = (f"P(reliable) &ge; {summary['threshold']:.4g} is accepted" if summary["threshold"] <= 1
            else "every prediction is rejected (no threshold met the target on the calibration set)")
    interval = summary.get("risk_interval")
    risk = _pct(summary["risk"]) + (f" [{_pct(interval[0])}, {_pct(interval[1])}]" if interval else "")
    meets = summary.get("meets_target")
    verdict = ("" if meets is None else
               f' <span class="{"good" if meets else "bad"}">'
               f'{"meets the target" if meets else "misses the target"}</span>')
    rows = [
        ("rule", rule), ("guarantee", guarantee),
        ("calibration", f"{summary['n_calibration']} structures, coverage "
                        f"{_pct(summary['calibration_coverage'])}, selective risk "
                        f"{_pct(summary['calibration_risk'])}"
                        + (f", bound {_pct(summary['risk_bound'])}" if summary.get("risk_bound") is not None else "")),
        ("held out", f"{summary['n_structures']} structures ({summary['n_left_out_calibration']} calibration "
                     "ones left out)"),
        ("realised coverage", _pct(summary["coverage"])),
        ("realised selective risk", risk + " (95 % Clopper-Pearson)" * bool(interval) + verdict),
        ("accepted and unreliable", _pct(summary["accepted_unreliable_rate"]) + " of all"),
    ]
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<h2>Calibrated threshold</h2><dl class="summary" id="selective">{body}</dl>'


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _plots_section(plots) -> str:
    images = [f'<figure><img src="{_png_data_uri(Path(p).read_bytes())}" alt="{html.escape(Path(p).stem)}">'
              "</figure>" for p in plots]
    return f'<h2>Plots</h2><div class="plots">{"".join(images)}</div>' if images else ""


# ---- the least-trusted structures -----------------------------------------------------
def least_trusted(arrays, n) -> np.ndarray:
    """Rows of the ``n`` structures with the lowest P(reliable), larger error first on ties."""
    order = np.lexsort((-np.asarray(arrays["errors"]), np.asarray(arrays["p_reliable"])))
    return order[:n]


def probe_atom_map(arrays):
    """The per-atom map to colour by, (per-atom arrays, label): the predicted force error
    when the probe has a per-atom head, else the attention importance."""
    if arrays.get("atom_error") is not None:
        return arrays["atom_error"], "predicted force error (eV/Å)"
    return arrays["importance"], "importance (share of the structure)"


def _actual_force_errors(data, row):
    errors = getattr(data, "atom_force_error", None)
    if errors is None:
        return None
    values = np.asarray(errors[atom_rows(data, row)], dtype=float)
    return values if len(values) and np.all(np.isfinite(values)) else None


def _rotation_onto_z(vector) -> np.ndarray:
    """The rotation matrix that turns ``vector`` onto +z (Rodrigues' formula)."""
    a = np.asarray(vector, dtype=float)
    a = a / np.linalg.norm(a)
    cosine = a[2]
    if cosine < -1 + 1e-9:  # pointing away: half a turn about y
        return np.diag([-1.0, 1.0, -1.0])
    k = np.cross(a, [0.0, 0.0, 1.0])
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + skew + skew @ skew / (1 + cosine)


def view_of(atoms, focus=None):
    """A copy turned for the picture (the viewer looks down -z). Its widest extent lies
    across the picture (principal axes); the ``focus`` atom faces the viewer: a round
    structure (a cluster) is turned so the atom sits front and centre, a flat or long one
    keeps its widest side and shows the side the atom is on. Periodic structures are left
    as they are."""
    atoms = atoms.copy()
    if atoms.pbc.any() or len(atoms) < 3:
        return atoms
    centred = atoms.positions - atoms.positions.mean(axis=0)
    _, spread, axes = np.linalg.svd(centred, full_matrices=False)
    if np.linalg.det(axes) < 0:  # keep it a rotation, not a mirror image
        axes[2] *= -1
    turned = centred @ axes.T
    if focus is not None and np.linalg.norm(turned[focus]) > 1e-6:
        if spread[2] > 0.6 * spread[0]:
            turned = turned @ _rotation_onto_z(turned[focus]).T
        elif turned[focus, 2] < 0:
            turned = turned * [-1.0, 1.0, -1.0]  # half a turn about y
    atoms.positions = turned
    return atoms


def draw_atoms(ax, atoms, values, norm, novel=None, focus=None):
    """Atoms as discs coloured by ``values`` in depth order (ase's projection); atoms where
    ``novel`` is True get a ring drawn right after their disc, so nearer atoms cover it as
    they cover the disc. With several elements (a molecule), discs carry their element
    symbol, covered the same way. ``focus``: the atom to turn towards the viewer
    (``view_of``). Returns the rings drawn."""
    atoms = view_of(atoms, focus)
    shade = norm(np.asarray(values, dtype=float))
    colors = MAP_COLORS(shade)[:, :3]
    projection = AtomsProjection(atoms, ax, colors=colors, radii=0.9, show_unit_cell=0)
    ax.set_xlim(0, projection.w)
    ax.set_ylim(0, projection.h)
    ax.set_aspect("equal")
    ax.set_axis_off()
    # font size from the disc size on the page: points per projection unit
    points_per_unit = ax.get_position().width * ax.figure.get_figwidth() * 72 / max(projection.w, projection.h)
    label = len(set(atoms.numbers)) > 1
    rings = []
    n_atoms = len(atoms)
    for a in np.argsort(projection.positions[:n_atoms, 2]):  # far to near
        xy, radius = projection.positions[a, :2], projection.d[a] / 2
        ax.add_patch(Circle(xy, radius, facecolor=colors[a], edgecolor="black", linewidth=0.5))
        if novel is not None and novel[a]:
            ring = Circle(xy, radius * 0.82, fill=False, edgecolor=NOVEL_RING, linewidth=2.2)
            ax.add_patch(ring)
            rings.append(ring)
        size = min(9.0, 0.9 * radius * points_per_unit)
        if label and size >= 4:  # same zorder as the discs: later (nearer) discs cover it
            ax.text(*xy, atoms[a].symbol, ha="center", va="center", fontsize=size, zorder=1,
                    color="white" if shade[a] > 0.65 else "black")
    return rings


def structure_norm(values) -> Normalize:
    """0 to the structure's largest value. Per structure, not one scale for all pictures:
    the least trusted mix structures far outside the domain (force errors of eV/Å) with
    near misses (tenths), and one scale would leave the near misses blank; each picture's
    colour bar gives its numbers."""
    values = np.asarray(values, dtype=float)
    top = float(np.nanmax(values)) if len(values) and np.isfinite(values).any() else 1.0
    return Normalize(vmin=0.0, vmax=max(top, 1e-12))


def structure_figure(atoms, probe_values, probe_label, probe_norm, actual=None, actual_norm=None,
                     novel=None, focus=None) -> bytes:
    """PNG of one structure: the probe's per-atom map and, where the store has reference
    forces, the actual per-atom force error next to it, both seen from the same side (the
    ``focus`` atom towards the viewer). Fixed size, so cards line up."""
    panels = [(probe_values, probe_label, probe_norm, "PROBE map", novel)]
    if actual is not None:
        panels.append((actual, "actual |ΔF| (eV/Å)", actual_norm, "actual force error", None))
    # fixed rectangles, not a layout engine: equal-aspect drawings then never push the
    # title out of the picture, and every card is the same size
    fig = plt.figure(figsize=(2.1 * len(panels), 2.6))
    width = 1 / len(panels)
    for i, (values, label, norm, title, ring) in enumerate(panels):
        ax = fig.add_axes((i * width + 0.02, 0.30, width - 0.04, 0.58))
        draw_atoms(ax, atoms, values, norm, ring, focus)
        fig.text((i + 0.5) * width, 0.93, title, ha="center", fontsize=9)
        bar_ax = fig.add_axes((i * width + 0.1 * width, 0.19, 0.8 * width, 0.045))
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=MAP_COLORS), cax=bar_ax, orientation="horizontal")
        bar.locator = MaxNLocator(3)
        bar.update_ticks()
        bar.set_label(label, fontsize=7.5)
        bar.ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130)
    plt.close(fig)
    return buffer.getvalue()


def _number(value) -> str:
    """Three significant digits, trailing zeros kept (0.500, not 0.5), so a column lines up."""
    return f"{float(value):#.3g}".rstrip(".")


def _least_trusted_section(evaluation, arrays, n) -> str:
    data = arrays["data"]
    rows = least_trusted(arrays, n)
    unit = UNITS.get(evaluation["label"]["target"], "")
    target = evaluation["label"]["target"]
    maps, map_label = probe_atom_map(arrays)
    atom_novelty = arrays.get("atom_novelty")
    novelty, in_domain = arrays.get("novelty"), arrays.get("in_domain")
    if novelty is None and in_domain is not None and np.all(in_domain):
        in_domain = None  # no domain model: every structure counts as inside, nothing to show
    frames, why = frames_for_structures(data, rows) if len(rows) else ([], None)

    actual = {int(r): _actual_force_errors(data, r) for r in rows}
    known = [v for v in actual.values() if v is not None]

    head = ["#", "frame", "formula", f"{target} error ({unit})", "truth", "P(reliable)"]
    if novelty is not None:
        head.append("novelty")
    if in_domain is not None:
        head.append("in domain")
    table_rows, cards = [], []
    for rank, row in enumerate(rows, start=1):
        formula = Symbols(data.atomic_numbers[atom_rows(data, row)]).get_chemical_formula() \
            if data.atomic_numbers is not None else f"{int(data.n_atoms[row])} atoms"
        bad = bool(arrays["unreliable"][row])
        truth = f'<span class="{"bad" if bad else "good"}">{"unreliable" if bad else "reliable"}</span>'
        frame = int(data.source_index[row])
        cells = [str(rank), str(frame), html.escape(formula), _number(arrays['errors'][row]), truth,
                 f"{arrays['p_reliable'][row]:.3f}"]
        facts = [f"<b>#{rank}</b> &middot; frame {frame} &middot; {html.escape(formula)}",
                 f"{target} error {_number(arrays['errors'][row])} {unit} ({truth})",
                 f"P(reliable) {arrays['p_reliable'][row]:.3f}"]
        if novelty is not None:
            cells.append(f"{float(novelty[row]):.2f}")
            facts.append(f"novelty {float(novelty[row]):.2f}"
                         + (" (outside the domain)" if float(novelty[row]) > 1 else ""))
        if in_domain is not None:
            cells.append("yes" if in_domain[row] else '<span class="bad">no</span>')
        table_rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        if frames is None:
            continue
        novel = None
        if atom_novelty is not None:
            novel = np.asarray(atom_novelty[row]) > 1
            facts.append(f"{int(novel.sum())} novel atom(s), ringed" if novel.any() else "no novel atom")
        values = np.asarray(maps[row], dtype=float)
        forces = actual[int(row)]
        # turn the most novel atom, else the most distrusted, towards the viewer
        focus = int(np.argmax(atom_novelty[row])) if novel is not None and novel.any() else int(np.argmax(values))
        png = structure_figure(frames[rank - 1], values, map_label, structure_norm(values), forces,
                               structure_norm(forces if forces is not None else []), novel, focus)
        cards.append(f'<div class="card"><img src="{_png_data_uri(png)}" alt="frame {frame}">'
                     f'<div class="facts">{"<br>".join(facts)}</div></div>')

    explain = f"The {len(rows)} structures with the lowest P(reliable)."
    if frames is not None:
        explain += f" Atoms are coloured by the probe's per-atom map, {html.escape(map_label)}"
        if known:
            explain += ", next to the actual per-atom force error against the reference (eV/&Aring;)"
        explain += (". Each picture is scaled from 0 to its structure's largest value (its colour bar "
                    "gives the numbers): darker red, distrusted more.")
        if atom_novelty is not None:
            explain += (" Atoms with novelty &gt; 1 (unlike the atoms the probe was fitted on) carry a "
                        f'<span style="color:{NOVEL_RING};font-weight:600">blue ring</span>.')
        explain += (" Drawn with ase's matplotlib plotting, turned so that the most novel (else the most "
                    "distrusted) atom faces you.")
    table = (f'<table id="least-trusted"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>'
             f"<tbody>{''.join(table_rows)}</tbody></table>")
    if frames is None:
        drawings = (f'<p class="note" id="no-drawings">The structures are not drawn: {html.escape(why)}. '
                    "Positions are not kept in the feature store; restore the input file at this path "
                    "and run <code>probe evaluate</code> again to draw them.</p>")
    else:
        drawings = f'<div class="cards">{"".join(cards)}</div>'
    return (f"<h2>Least-trusted structures</h2>{_atom_maps_section(evaluation.get('atom_maps'))}"
            f"<p class=\"muted\">{explain}</p>{table}{drawings}")

