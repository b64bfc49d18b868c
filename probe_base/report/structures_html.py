"""The report's least-trusted section in HTML: a note on how to read it, the table of the
structures ``probe_base.report.structures`` chose and the pictures
``probe_base.report.structure_drawing`` draws, embedded as data URIs (also the plots', for
``probe_base.report.html``)."""

from __future__ import annotations

import base64
import html

import numpy as np
from ase.symbols import Symbols

from probe_base.io.frames import atom_rows, frames_for_structures
from probe_base.labels import UNITS
from probe_base.report.structure_drawing import NOVEL_RING, structure_figure, structure_norm
from probe_base.report.structures import _actual_force_errors, least_trusted, probe_atom_map


def png_data_uri(png: bytes) -> str:
    """A PNG as a data URI, so the page embeds its images."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def svg_data_uri(svg: bytes) -> str:
    """An SVG as a data URI (base64: no quoting rules to get wrong)."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def _number(value) -> str:
    """Three significant digits, trailing zeros kept (0.500, not 0.5), so a column lines up."""
    return f"{float(value):#.3g}".rstrip(".")


def least_trusted_section(evaluation, arrays, n) -> str:
    """The ``n`` structures of lowest P(reliable): a note on how to read them, their table and
    (where the input file is still there) their pictures."""
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
    figures = {}  # one figure per layout, redrawn for every structure
    for rank, row in enumerate(rows, start=1):
        formula = (
            Symbols(data.atomic_numbers[atom_rows(data, row)]).get_chemical_formula()
            if data.atomic_numbers is not None
            else f"{int(data.n_atoms[row])} atoms"
        )
        bad = bool(arrays["unreliable"][row])
        truth = f'<span class="{"bad" if bad else "good"}">{"unreliable" if bad else "reliable"}</span>'
        frame = int(data.source_index[row])
        cells = [
            str(rank),
            str(frame),
            html.escape(formula),
            _number(arrays["errors"][row]),
            truth,
            f"{arrays['p_reliable'][row]:.3f}",
        ]
        facts = [
            f"<b>#{rank}</b> &middot; frame {frame} &middot; {html.escape(formula)}",
            f"{target} error {_number(arrays['errors'][row])} {unit} ({truth})",
            f"P(reliable) {arrays['p_reliable'][row]:.3f}",
        ]
        if novelty is not None:
            cells.append(f"{float(novelty[row]):.2f}")
            facts.append(
                f"novelty {float(novelty[row]):.2f}" + (" (outside the domain)" if float(novelty[row]) > 1 else "")
            )
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
        picture = structure_figure(
            frames[rank - 1],
            values,
            map_label,
            structure_norm(values),
            forces,
            structure_norm(forces if forces is not None else []),
            novel,
            focus,
            figures,
        )
        cards.append(
            f'<div class="card"><img src="{svg_data_uri(picture)}" alt="frame {frame}">'
            f'<div class="facts">{"<br>".join(facts)}</div></div>'
        )

    explain = _how_to_read(rows, frames, map_label, known, atom_novelty)
    table = (
        f'<table id="least-trusted"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>'
        f"<tbody>{''.join(table_rows)}</tbody></table>"
    )
    if frames is None:
        drawings = (
            f'<p class="note" id="no-drawings">The structures are not drawn: {html.escape(why)}. '
            "Positions are not kept in the feature store; restore the input file at this path "
            "and run <code>probe evaluate</code> again to draw them.</p>"
        )
    else:
        drawings = f'<div class="cards">{"".join(cards)}</div>'
    return f'<p class="muted">{explain}</p>{table}{drawings}'


def _how_to_read(rows, frames, map_label, known, atom_novelty) -> str:
    """The note above the table: which structures these are and, where they are drawn, how
    to read the pictures."""
    explain = f"The {len(rows)} structures with the lowest P(reliable)."
    if frames is not None:
        explain += f" Atoms are coloured by the probe's per-atom map, {html.escape(map_label)}"
        if known:
            explain += ", next to the actual per-atom force error against the reference (eV/&Aring;)"
        explain += (
            ". Each picture is scaled from 0 to its structure's largest value (its colour bar "
            "gives the numbers): darker red, distrusted more."
        )
        if atom_novelty is not None:
            explain += (
                " Atoms with novelty &gt; 1 (unlike the atoms the probe was fitted on) carry a "
                f'<span style="color:{NOVEL_RING};font-weight:600">blue ring</span>.'
            )
        explain += (
            " Drawn with ase's matplotlib plotting, turned so that the most novel (else the most "
            "distrusted) atom faces you."
        )
    return explain
