"""report.html: its content from a real evaluation, the optional per-atom maps, a missing
input file, a calibrated threshold, and the page as headless Chromium shows it."""

import base64
import dataclasses
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import numpy as np
import pytest
from headless_browser import chromium, full_page_screenshot
from matplotlib.colors import Normalize
from matplotlib.patches import Circle

from probe_base.report.html import N_LEAST_TRUSTED, write_report
from probe_base.report.structure_drawing import MAP_COLORS, ColourBar, draw_atoms, view_of
from probe_base.report.structures import least_trusted
from probe_base.workflow.evaluate import evaluate_probe, write_evaluation


class Page(HTMLParser):
    """The parts of the page the tests look at: images, table rows, element ids."""

    def __init__(self, text):
        super().__init__()
        self.images, self.ids, self.links, self.rows = [], set(), [], {}
        self.cards, self._table, self._row, self._cell = [], None, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        if tag in ("a", "link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))
        if tag == "table":
            self._table = attrs.get("id")
            self.rows[self._table] = []
        if tag == "tr" and self._table:
            self._row = []
        if tag == "td" and self._row is not None:
            self._cell = ""
        if tag == "div" and attrs.get("class") == "card":
            self.cards.append("")

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        if tag == "tr" and self._row:
            self.rows[self._table].append(self._row)
            self._row = None
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self.cards:
            self.cards[-1] += data


@pytest.fixture(scope="module")
def evaluation(fitted_probe, heldout_store):
    return evaluate_probe(fitted_probe, heldout_store, n_bootstrap=20)


DOMAIN_KEYS = ("in_domain", "novelty", "atom_novelty", "atom_error")


def without_domain_keys(evaluation, how="missing"):
    """The evaluation as a probe without domain model and per-atom head gives it: the
    optional keys absent (``missing``) or None."""
    arrays = {k: v for k, v in evaluation["arrays"].items() if k not in DOMAIN_KEYS}
    if how == "none":
        arrays.update(dict.fromkeys(DOMAIN_KEYS))
    return {**evaluation, "arrays": arrays}


def with_lead_maps(evaluation, seed=0):
    """The evaluation plus the optional per-structure and per-atom keys the domain work adds."""
    rng = np.random.default_rng(seed)
    arrays = dict(evaluation["arrays"])
    n = len(arrays["p_reliable"])
    counts = arrays["data"].n_atoms
    arrays["novelty"] = rng.uniform(0.2, 2.0, n)
    arrays["in_domain"] = arrays["novelty"] <= 1
    arrays["atom_novelty"] = [np.where(np.arange(c) % 3 == 0, 1.5, 0.4) for c in counts]
    arrays["atom_error"] = [rng.uniform(0.0, 0.3, c) for c in counts]
    return {**evaluation, "arrays": arrays}


def embedded_bytes(img, kind):
    src = img["src"]
    assert src.startswith(f"data:image/{kind};base64,"), src[:40]
    return base64.b64decode(src.split(",", 1)[1])


@pytest.mark.parametrize("how", ["missing", "none"])
def test_report_is_self_contained_with_every_method_and_the_least_trusted(evaluation, tmp_path, how):
    plain = without_domain_keys(evaluation, how)
    folder = write_evaluation(plain, tmp_path / "report")
    page = Page((folder / "report.html").read_text())
    # the four plots (embedded PNGs) and one picture per least-trusted structure (embedded SVGs)
    assert len(page.images) == 4 + N_LEAST_TRUSTED
    assert all(embedded_bytes(img, "png")[:8] == b"\x89PNG\r\n\x1a\n" for img in page.images[:4])
    for img in page.images[4:]:
        svg = embedded_bytes(img, "svg+xml").decode("utf-8")
        assert svg.startswith("<?xml") and "<svg" in svg and "PROBE map" in svg
    assert page.links == []  # nothing fetched from anywhere
    methods = [row[0] for row in page.rows["metrics"]]
    assert methods == list(evaluation["metrics"])
    probe_row = page.rows["metrics"][0]
    auroc, low, high = evaluation["metrics"]["PROBE"]["auroc"]
    assert probe_row[1] == f"{auroc:.3f}[{low:.3f}, {high:.3f}]"
    # the default decisions and the per-atom maps' quality, as evaluate_probe measured them
    assert [row[0] for row in page.rows["decisions"]] == list(evaluation["decisions"])
    assert [row[0] for row in page.rows["atom-maps"]] == list(evaluation["atom_maps"])
    hit_rate = next(iter(evaluation["atom_maps"].values()))["hit_rate"]
    assert page.rows["atom-maps"][0][1] == f"{100 * hit_rate:.1f} %"
    # the least trusted, lowest P(reliable) first, with their frame numbers
    arrays = evaluation["arrays"]
    rows = least_trusted(arrays, N_LEAST_TRUSTED)
    assert np.all(np.diff(arrays["p_reliable"][rows]) >= 0)
    assert arrays["p_reliable"][rows].max() <= np.sort(arrays["p_reliable"])[N_LEAST_TRUSTED - 1]
    table = page.rows["least-trusted"]
    assert [int(r[1]) for r in table] == arrays["data"].source_index[rows].tolist()
    assert [float(r[5]) for r in table] == pytest.approx(arrays["p_reliable"][rows], abs=5e-4)
    assert all(len(r) == 6 for r in table)  # no novelty or domain columns without them
    for card, row in zip(page.cards, rows):
        assert f"frame {arrays['data'].source_index[row]}" in card
        assert f"P(reliable) {arrays['p_reliable'][row]:.3f}" in card
        assert "novel" not in card
    assert "no-drawings" not in page.ids
    text = (folder / "report.html").read_text()
    assert "importance (share of the structure)" in text and "blue ring" not in text
    assert "no calibrated threshold" in text


def test_report_uses_the_optional_domain_keys(evaluation, tmp_path):
    extended = with_lead_maps(evaluation)
    path = write_report(extended, tmp_path)
    page = Page(path.read_text())
    text = path.read_text()
    assert len(page.images) == N_LEAST_TRUSTED
    assert "predicted force error (eV/Å)" in text and "blue ring" in text
    rows = least_trusted(extended["arrays"], N_LEAST_TRUSTED)
    table = page.rows["least-trusted"]
    assert [float(r[6]) for r in table] == pytest.approx(extended["arrays"]["novelty"][rows], abs=5e-3)
    assert [r[7] for r in table] == ["yes" if v else "no" for v in extended["arrays"]["in_domain"][rows]]
    for card, row in zip(page.cards, rows):
        n_novel = int(np.sum(extended["arrays"]["atom_novelty"][row] > 1))
        assert f"{n_novel} novel atom(s), ringed" in card


def test_report_of_a_probe_with_domain_and_atom_head(evaluation, tmp_path):
    """evaluate_probe's own domain keys (the toy probe has a domain model and a per-atom head)."""
    arrays = evaluation["arrays"]
    assert arrays["novelty"] is not None and arrays["atom_error"] is not None
    text = write_report(evaluation, tmp_path).read_text()
    page = Page(text)
    rows = least_trusted(arrays, N_LEAST_TRUSTED)
    assert [float(r[6]) for r in page.rows["least-trusted"]] == pytest.approx(arrays["novelty"][rows], abs=5e-3)
    assert "predicted force error (eV/Å)" in text and "domain test" in text
    assert len(page.cards) == N_LEAST_TRUSTED


def test_draw_atoms_colours_by_the_map_and_rings_novel_atoms():
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Cu", 2)  # 13 atoms
    values = np.linspace(0.0, 1.0, len(atoms))
    novel = np.zeros(len(atoms), dtype=bool)
    novel[[0, 5]] = True
    fig, ax = plt.subplots()
    norm = Normalize(0, 1)
    rings = draw_atoms(ax, atoms, values, norm, novel)
    discs = [p for p in ax.patches if p.get_fill()]
    assert len(discs) == len(atoms) and len(rings) == 2
    # every atom's colour is the map's colour of its value, drawn once
    drawn = sorted(tuple(np.round(d.get_facecolor()[:3], 6)) for d in discs)
    expected = sorted(tuple(np.round(c, 6)) for c in MAP_COLORS(norm(values))[:, :3])
    assert drawn == expected
    # each ring sits on the disc of a novel atom and follows it in drawing order
    order = list(ax.patches)
    for ring in rings:
        disc = order[order.index(ring) - 1]
        assert isinstance(disc, Circle) and disc.center == pytest.approx(ring.center)
        colour = tuple(np.round(disc.get_facecolor()[:3], 6))
        assert colour in {tuple(np.round(MAP_COLORS(norm(values[a]))[:3], 6)) for a in (0, 5)}
    plt.close(fig)


@pytest.mark.parametrize("top", [2.0, 0.37, 3e-6, 4.2e7])
def test_colour_bar_shows_the_numbers_of_a_matplotlib_colour_bar(top):
    from matplotlib.ticker import MaxNLocator

    fig, (mine, theirs) = plt.subplots(2, 1)
    norm = Normalize(0.0, top)
    bar = ColourBar(mine)
    bar.show(norm, "a label")
    reference = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=MAP_COLORS), cax=theirs, orientation="horizontal")
    reference.locator = MaxNLocator(3)
    reference.update_ticks()
    fig.canvas.draw()
    expected = [(t.get_text(), x) for t, x in zip(theirs.get_xticklabels(), theirs.get_xticks()) if 0 <= x <= top]
    shown = [(t.get_text(), t.get_position()[0] * top) for t in bar.numbers if t.get_visible()]
    assert len(expected) >= 2 and [text for text, _ in shown] == [text for text, _ in expected]
    assert [x for _, x in shown] == pytest.approx([x for _, x in expected])
    assert bar.offset.get_text() == theirs.xaxis.get_offset_text().get_text()
    assert bar.label.get_text() == "a label"
    plt.close(fig)


def test_view_turns_the_focus_atom_to_the_viewer():
    from ase.build import molecule
    from ase.cluster import Icosahedron

    cluster = Icosahedron("Cu", 3)  # round: the focus atom comes to the front
    surface_atom = int(np.argmax(np.linalg.norm(cluster.positions - cluster.positions.mean(0), axis=1)))
    turned = view_of(cluster, focus=surface_atom)
    assert np.argmax(turned.positions[:, 2]) == surface_atom
    assert np.allclose(turned.get_all_distances(), cluster.get_all_distances())  # a rotation
    long = molecule("CH3CH2OH")  # not round: widest side across, the focus atom's side shown
    for focus in range(len(long)):
        positions = view_of(long, focus=focus).positions
        spread = positions.std(axis=0)
        assert spread[0] >= spread[1] >= spread[2]
        assert positions[focus, 2] >= 0


def test_report_without_the_input_file_keeps_the_table(evaluation, tmp_path):
    arrays = dict(evaluation["arrays"])
    gone = tmp_path / "moved-away.xyz"
    arrays["data"] = dataclasses.replace(arrays["data"], attrs={**arrays["data"].attrs, "input": str(gone)})
    path = write_report({**evaluation, "arrays": arrays}, tmp_path)
    page = Page(path.read_text())
    assert page.images == [] and page.cards == []
    assert len(page.rows["least-trusted"]) == N_LEAST_TRUSTED
    assert "no-drawings" in page.ids and str(gone) in path.read_text()


def test_report_shows_the_calibrated_threshold(fitted_probe, heldout_store, tmp_path):
    from probe_base.workflow.calibrate import calibrate_probe

    calibrated = tmp_path / "calibrated.probe"
    calibrate_probe(fitted_probe, heldout_store, target_risk=0.3, delta=0.2, output=calibrated)
    evaluation = evaluate_probe(calibrated, heldout_store, n_bootstrap=5)
    summary = evaluation["selective"]
    text = write_report(evaluation, tmp_path).read_text()
    assert 'id="selective"' in text
    assert f"{summary['n_structures']} structures ({summary['n_left_out_calibration']} calibration" in text
    coverage = "&ndash;" if summary["coverage"] is None else f"{100 * summary['coverage']:.1f} %"
    assert f"<dt>realised coverage</dt><dd>{coverage}</dd>" in text


# ---- the page in a real browser --------------------------------------------------------
def test_report_in_headless_chromium(evaluation, tmp_path):
    folder = write_evaluation(evaluation, tmp_path / "report")
    shot = tmp_path / "report.png"
    with chromium() as driver:
        driver.get((folder / "report.html").as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert len(images) == 4 + N_LEAST_TRUSTED
        assert all(done and width > 0 and height > 0 for done, width, height in images), images
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('#metrics tbody tr')).map(r => r.dataset.method)"
        )
        assert rows == list(evaluation["metrics"])
        assert driver.execute_script("return document.querySelector('#metrics').offsetHeight") > 100
        height = full_page_screenshot(driver, shot)
    pixels = plt.imread(shot)
    assert pixels.shape[:2] == (height, 1280)
    assert pixels[..., :3].std() > 0.05  # a drawn page, not a blank one
