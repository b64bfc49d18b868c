"""The least-trusted structures drawn atom by atom (SVG), coloured by the probe's per-atom map
(next to the actual per-atom force error where the store has reference forces), novel
atoms ringed, each with its colour bar.

Drawn with ase's matplotlib plotting (``ase.visualize.plot``): ase and matplotlib are
dependencies already and render on any machine, headless included. OVITO's PyPI module
(3.17) was tried: it needs a system Vulkan driver to render (libvulkan1 and
mesa-vulkan-drivers, absent on a bare node) and adds ~600 MB.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from ase.visualize.plot import Matplotlib as AtomsProjection
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import TICKDOWN
from matplotlib.patches import Circle, Rectangle
from matplotlib.ticker import MaxNLocator, ScalarFormatter
from matplotlib.transforms import ScaledTranslation

MAP_COLORS = matplotlib.colormaps["YlOrRd"]
NOVEL_RING = "#1f4fd6"


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
        # add_artist: the limits are set above, add_patch would recompute them per disc
        ax.add_artist(Circle(xy, radius, facecolor=colors[a], edgecolor="black", linewidth=0.5))
        if novel is not None and novel[a]:
            ring = Circle(xy, radius * 0.82, fill=False, edgecolor=NOVEL_RING, linewidth=2.2)
            ax.add_artist(ring)
            rings.append(ring)
        size = min(9.0, 0.9 * radius * points_per_unit)
        if label and size >= 4:  # same zorder as the discs: later (nearer) discs cover it
            ax.text(
                *xy,
                atoms[a].symbol,
                ha="center",
                va="center",
                fontsize=size,
                zorder=1,
                color="white" if shade[a] > 0.65 else "black",
            )
    return rings


def structure_norm(values) -> Normalize:
    """0 to the structure's largest value. Per structure, not one scale for all pictures:
    the least trusted mix structures far outside the domain (force errors of eV/Å) with
    near misses (tenths), and one scale would leave the near misses blank; each picture's
    colour bar gives its numbers."""
    values = np.asarray(values, dtype=float)
    top = float(np.nanmax(values)) if len(values) and np.isfinite(values).any() else 1.0
    return Normalize(vmin=0.0, vmax=max(top, 1e-12))


class ColourBar:
    """A horizontal colour bar from 0 to a structure's largest value: the map's full
    gradient, framed, with the ticks and numbers of matplotlib's own colour bar
    (``MaxNLocator(3)``, ``ScalarFormatter``). Drawn from a few artists that only change
    their text and place per structure: ``Figure.colorbar`` redraws its axes' tick
    machinery, which cost more than the structure's atoms."""

    TICK = 3.5  # points, as matplotlib's ticks (length and label pad)

    def __init__(self, ax):
        self.ax = ax
        ax.set_axis_off()
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.imshow(np.linspace(0, 1, 256)[None, :], cmap=MAP_COLORS, aspect="auto", extent=(0, 1, 0, 1))
        ax.add_artist(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, linewidth=0.8))
        (self.marks,) = ax.plot([], [], linestyle="", marker=TICKDOWN, markersize=self.TICK, color="black")
        self.marks.set(markeredgewidth=0.8, clip_on=False, transform=ax.transAxes)
        below = lambda points: ax.transAxes + ScaledTranslation(0, -points / 72, ax.figure.dpi_scale_trans)  # noqa: E731
        self.numbers = [
            ax.text(0, 0, "", ha="center", va="top", fontsize=7, transform=below(2 * self.TICK)) for _ in range(8)
        ]
        self.offset = ax.text(1, 0, "", ha="right", va="top", fontsize=7, transform=below(11 + 2 * self.TICK))
        self.label = ax.text(0.5, 0, "", ha="center", va="top", fontsize=7.5, transform=below(12 + 2 * self.TICK))

    def show(self, norm, label):
        top = float(norm.vmax)
        ticks = MaxNLocator(3).tick_values(0.0, top)
        ticks = ticks[(ticks >= -1e-10 * top) & (ticks <= top * (1 + 1e-10))]
        formatter = ScalarFormatter()
        formatter.create_dummy_axis()
        formatter.axis.set_view_interval(0.0, top)
        texts = formatter.format_ticks(ticks)
        self.marks.set_data(ticks / top, np.zeros(len(ticks)))
        for i, number in enumerate(self.numbers):
            shown = i < len(ticks)
            number.set_visible(shown)
            if shown:
                number.set_x(ticks[i] / top)
                number.set_text(texts[i])
        self.offset.set_text(formatter.get_offset())
        self.label.set_text(label)


class StructureFigure:
    """The figure of a structure card, built once and redrawn for each structure: making a
    figure, its axes and colour bars costs more than drawing a structure's atoms. Fixed
    rectangles, not a layout engine: equal-aspect drawings then never push the title out of
    the picture, and every card is the same size."""

    def __init__(self, titles):
        self.figure = Figure(figsize=(2.1 * len(titles), 2.6))
        FigureCanvasAgg(self.figure)
        width = 1 / len(titles)
        self.panels = []
        for i, title in enumerate(titles):
            ax = self.figure.add_axes((i * width + 0.02, 0.30, width - 0.04, 0.58))
            self.figure.text((i + 0.5) * width, 0.93, title, ha="center", fontsize=9)
            bar = ColourBar(self.figure.add_axes((i * width + 0.1 * width, 0.19, 0.8 * width, 0.045)))
            self.panels.append((ax, bar))

    def svg(self, atoms, panels, focus=None) -> bytes:
        """``panels``: (values, colour bar label, norm, novel) per panel, in title order."""
        for (ax, bar), (values, label, norm, novel) in zip(self.panels, panels):
            for artist in [*ax.patches, *ax.texts]:  # the previous structure
                artist.remove()
            draw_atoms(ax, atoms, values, norm, novel, focus)
            bar.show(norm, label)
        buffer = io.BytesIO()
        # text as SVG text, not glyph outlines: smaller and faster (the browser has a sans-serif)
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "probe"}):
            self.figure.savefig(buffer, format="svg", metadata={"Date": None})
        return buffer.getvalue()


def structure_figure(
    atoms, probe_values, probe_label, probe_norm, actual=None, actual_norm=None, novel=None, focus=None, figures=None
) -> bytes:
    """SVG of one structure: the probe's per-atom map and, where the store has reference
    forces, the actual per-atom force error next to it, both seen from the same side (the
    ``focus`` atom towards the viewer). Fixed size, so cards line up. ``figures``: a dict
    that keeps the ``StructureFigure`` of each layout for the next structure."""
    titles = ("PROBE map",) if actual is None else ("PROBE map", "actual force error")
    panels = [(probe_values, probe_label, probe_norm, novel)]
    if actual is not None:
        panels.append((actual, "actual |ΔF| (eV/Å)", actual_norm, None))
    figures = {} if figures is None else figures
    if titles not in figures:
        figures[titles] = StructureFigure(titles)
    return figures[titles].svg(atoms, panels, focus)
