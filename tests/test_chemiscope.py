"""Chemiscope files from `probe evaluate --chemiscope` and `probe predict --chemiscope`,
read back as the gzip JSON chemiscope's viewer loads."""

import dataclasses
import gzip
import json

import ase.io
import numpy as np
import pytest

from probe_base.cli import main
from probe_base.report.chemiscope import chemiscope_from_evaluation, structure_map
from probe_base.workflow.evaluate import evaluate_probe


def read_chemiscope(path):
    with gzip.open(path, "rt") as handle:
        return json.load(handle)


def values(dataset, name):
    return np.asarray(dataset["properties"][name]["values"], dtype=float)


@pytest.fixture(scope="module")
def evaluation(fitted_probe, heldout_store):
    return evaluate_probe(fitted_probe, heldout_store, n_bootstrap=5)


DOMAIN_KEYS = ("in_domain", "novelty", "atom_novelty", "atom_error")


def test_evaluation_file_holds_structures_scores_and_maps(evaluation, tmp_path):
    """A probe without domain model or per-atom head: the optional keys are absent."""
    evaluation = {**evaluation, "arrays": {k: v for k, v in evaluation["arrays"].items() if k not in DOMAIN_KEYS}}
    path = tmp_path / "evaluated.json.gz"
    assert chemiscope_from_evaluation(evaluation, path) is None
    dataset = read_chemiscope(path)
    arrays, data = evaluation["arrays"], evaluation["arrays"]["data"]
    structures = dataset["structures"]
    assert len(structures) == evaluation["n_structures"] == len(data)
    assert [s["size"] for s in structures] == data.n_atoms.tolist()
    # the structures are the input file's frames the store rows came from
    frames = ase.io.read(data.attrs["input"], ":")
    for row in (0, len(data) - 1):
        frame = frames[data.source_index[row]]
        assert structures[row]["names"] == frame.get_chemical_symbols()
        assert structures[row]["x"] == pytest.approx(frame.positions[:, 0])
    assert values(dataset, "P(reliable)") == pytest.approx(arrays["p_reliable"])
    assert values(dataset, "energy error") == pytest.approx(arrays["errors"])
    assert values(dataset, "energy per atom") == pytest.approx(data.energy_pred / data.n_atoms)
    assert values(dataset, "frame").tolist() == data.source_index.tolist()
    assert dataset["properties"]["unreliable"]["values"] == [
        "unreliable" if u else "reliable" for u in arrays["unreliable"]
    ]
    for method in set(arrays["scores"]) - {"PROBE"}:
        assert values(dataset, f"risk score: {method}") == pytest.approx(arrays["scores"][method])
    # per atom: every atom an environment, the importance and the actual force error
    assert len(dataset["environments"]) == int(data.n_atoms.sum())
    assert dataset["properties"]["importance"]["target"] == "atom"
    assert values(dataset, "importance") == pytest.approx(np.concatenate(arrays["importance"]), rel=1e-6)
    assert values(dataset, "actual force error") == pytest.approx(data.atom_force_error, rel=1e-6)
    assert "predicted force error" not in dataset["properties"] and "novelty" not in dataset["properties"]
    # the 2-D map: centred principal components, the first the wider
    pca = np.stack([values(dataset, "PCA[1]"), values(dataset, "PCA[2]")], axis=1)
    assert np.abs(pca.mean(axis=0)).max() < 1e-6 * max(1.0, np.abs(pca).max())
    assert pca[:, 0].var() >= pca[:, 1].var() > 0
    settings = dataset["settings"]
    assert settings["map"]["x"]["property"] == "PCA[1]" and settings["map"]["y"]["property"] == "PCA[2]"
    assert settings["map"]["color"]["property"] == "P(reliable)"
    assert settings["structure"][0]["color"]["property"] == "importance"


def test_evaluation_file_uses_the_optional_domain_keys(evaluation, tmp_path):
    """evaluate_probe's domain keys (the toy probe has a domain model and a per-atom head)."""
    arrays = evaluation["arrays"]
    assert all(arrays[k] is not None for k in DOMAIN_KEYS)
    path = tmp_path / "domain.json.gz"
    chemiscope_from_evaluation(evaluation, path)
    dataset = read_chemiscope(path)
    assert values(dataset, "novelty") == pytest.approx(arrays["novelty"])
    assert dataset["properties"]["in domain"]["values"] == ["yes" if v else "no" for v in arrays["in_domain"]]
    assert values(dataset, "predicted force error") == pytest.approx(np.concatenate(arrays["atom_error"]), rel=1e-6)
    assert values(dataset, "atom novelty") == pytest.approx(np.concatenate(arrays["atom_novelty"]), rel=1e-6)
    assert dataset["settings"]["structure"][0]["color"]["property"] == "predicted force error"
    # with the keys there but None (no domain model), the file is as without them
    plain = {**evaluation, "arrays": {**arrays, **dict.fromkeys(DOMAIN_KEYS)}}
    chemiscope_from_evaluation(plain, path)
    assert not {"novelty", "in domain", "predicted force error", "atom novelty"} & set(
        read_chemiscope(path)["properties"]
    )


def test_evaluation_file_without_the_input_file_is_a_map(evaluation, tmp_path):
    arrays = dict(evaluation["arrays"])
    gone = tmp_path / "gone.xyz"
    arrays["data"] = dataclasses.replace(arrays["data"], attrs={**arrays["data"].attrs, "input": str(gone)})
    path = tmp_path / "map.json.gz"
    why = chemiscope_from_evaluation({**evaluation, "arrays": arrays}, path)
    assert str(gone) in why
    dataset = read_chemiscope(path)
    assert dataset["structures"] == []
    assert {p["target"] for p in dataset["properties"].values()} == {"structure"}
    assert values(dataset, "P(reliable)") == pytest.approx(arrays["p_reliable"])


def test_structure_map_follows_the_widest_direction():
    t = np.linspace(-1, 1, 30)
    rng = np.random.default_rng(0)
    # five features, all driven by one coordinate plus small noise
    pooled = np.outer(t, [1.0, -2.0, 0.5, 3.0, 1.0]) + 0.01 * rng.normal(size=(30, 5))
    coordinates = structure_map(pooled)
    assert abs(np.corrcoef(coordinates[:, 0], t)[0, 1]) > 0.99
    assert coordinates[:, 1].var() < 0.01 * coordinates[:, 0].var()
    assert structure_map(pooled[:1]).tolist() == [[0.0, 0.0]]  # one structure: no map to draw


def test_cli_evaluate_and_predict_write_chemiscope(toy_files, fitted_probe, heldout_store, tmp_path, capsys):
    evaluated = tmp_path / "evaluated.json.gz"
    assert (
        main(
            [
                "evaluate",
                "--probe",
                str(fitted_probe),
                "--store",
                str(heldout_store),
                "--output-dir",
                str(tmp_path / "report"),
                "--bootstrap",
                "5",
                "--chemiscope",
                str(evaluated),
            ]
        )
        == 0
    )
    assert (tmp_path / "report" / "report.html").exists()
    assert (
        len(read_chemiscope(evaluated)["structures"])
        == json.loads((tmp_path / "report" / "metrics.json").read_text())["n_structures"]
    )

    scored, explorer = tmp_path / "scored.xyz", tmp_path / "scored.json.gz"
    assert (
        main(
            [
                "predict",
                "--adapter",
                "toy",
                "--model",
                str(toy_files["models"][0]),
                "--probe",
                str(fitted_probe),
                "--input",
                str(toy_files["train"]),
                "--output",
                str(scored),
                "--index",
                ":10",
                "--chemiscope",
                str(explorer),
            ]
        )
        == 0
    )
    assert f"wrote {explorer}" in capsys.readouterr().out
    frames = ase.io.read(scored, ":")
    reference = ase.io.read(toy_files["train"], ":10")
    dataset = read_chemiscope(explorer)
    assert len(dataset["structures"]) == 10
    assert [s["names"] for s in dataset["structures"]] == [f.get_chemical_symbols() for f in frames]
    energy = np.array([f.info["probe_energy"] for f in frames])
    n_atoms = np.array([len(f) for f in frames])
    assert values(dataset, "P(reliable)") == pytest.approx([f.info["probe_reliability"] for f in frames])
    assert values(dataset, "energy per atom") == pytest.approx(energy / n_atoms)
    # the training file has reference energies, so the error is known
    assert values(dataset, "energy error") == pytest.approx(
        np.abs(energy - [a.get_potential_energy() for a in reference])
    )
    assert values(dataset, "importance") == pytest.approx(
        np.concatenate([f.arrays["probe_importance"] for f in frames])
    )
    assert values(dataset, "predicted force error") == pytest.approx(
        np.concatenate([f.arrays["probe_atom_error"] for f in frames])
    )
    assert values(dataset, "novelty") == pytest.approx([f.info["probe_novelty"] for f in frames])
    assert dataset["properties"]["in domain"]["values"] == [
        "yes" if f.info["probe_in_domain"] else "no" for f in frames
    ]
    assert dataset["settings"]["structure"][0]["color"]["property"] == "predicted force error"
    assert len(dataset["environments"]) == n_atoms.sum()
    pca = np.stack([values(dataset, "PCA[1]"), values(dataset, "PCA[2]")], axis=1)
    assert pca[:, 0].var() >= pca[:, 1].var() > 0


def test_cli_refuses_a_chemiscope_name_before_working(toy_files, fitted_probe, tmp_path, capsys):
    scored = tmp_path / "scored.xyz"
    assert (
        main(
            [
                "predict",
                "--adapter",
                "toy",
                "--model",
                str(toy_files["models"][0]),
                "--probe",
                str(fitted_probe),
                "--input",
                str(toy_files["train"]),
                "--output",
                str(scored),
                "--chemiscope",
                str(tmp_path / "scored.xyz.gz"),
            ]
        )
        == 2
    )
    assert "a chemiscope file is named *.json.gz" in capsys.readouterr().err
    assert not scored.exists()


VIEWER_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><script src="{script}"></script></head>
<body><div id="meta"></div><div style="display:flex"><div id="map" style="width:600px;height:500px"></div>
<div id="structure" style="width:500px;height:500px"></div></div><div id="info"></div>
<script>
window.loaded = null;
window.viewerWarnings = [];
const warnings = new Chemiscope.Warnings();
warnings.addHandler((message) => window.viewerWarnings.push(String(message)));
Chemiscope.DefaultVisualizer.load({{map: "map", info: "info", meta: "meta", structure: "structure"}},
                                  {dataset}, warnings)
    .then(() => {{ window.loaded = "yes"; }})
    .catch((error) => {{ window.loaded = "error: " + error; }});
</script></body></html>"""


def test_chemiscope_viewer_opens_the_scored_file(toy_files, fitted_probe, tmp_path):
    """The file in chemiscope's own viewer (the chemiscope.min.js its package ships), in
    headless Chromium: it loads without error or warning and draws the map and a structure."""
    import time
    from pathlib import Path

    import chemiscope
    import matplotlib.pyplot as plt
    from headless_browser import chromium, full_page_screenshot

    script = Path(chemiscope.__file__).parent / "sphinx" / "static" / "chemiscope.min.js"
    if not script.exists():
        pytest.skip(f"this chemiscope release ships no standalone viewer at {script}")
    explorer = tmp_path / "scored.json.gz"
    assert (
        main(
            [
                "predict",
                "--adapter",
                "toy",
                "--model",
                str(toy_files["models"][0]),
                "--probe",
                str(fitted_probe),
                "--input",
                str(toy_files["train"]),
                "--output",
                str(tmp_path / "s.xyz"),
                "--index",
                ":6",
                "--chemiscope",
                str(explorer),
            ]
        )
        == 0
    )
    with gzip.open(explorer, "rt") as handle:
        dataset = handle.read().replace("NaN", "null")  # JavaScript has no NaN literal in JSON
    page = tmp_path / "viewer.html"
    page.write_text(VIEWER_PAGE.format(script=script.as_uri(), dataset=dataset))
    shot = tmp_path / "viewer.png"
    # software WebGL for the structure viewer on a machine without a GPU
    with chromium(["--enable-unsafe-swiftshader"]) as driver:
        driver.get(page.as_uri())
        deadline = time.time() + 120
        while driver.execute_script("return window.loaded") is None and time.time() < deadline:
            time.sleep(0.5)
        assert driver.execute_script("return window.loaded") == "yes"
        assert driver.execute_script("return window.viewerWarnings") == []
        time.sleep(1)  # let the structure viewer draw its first frame
        full_page_screenshot(driver, shot)
    pixels = plt.imread(shot)[..., :3]
    for left, right in ((0, 600), (600, 1100)):  # the map, then the structure
        panel = pixels[60:500, left:right]
        assert (panel.min(axis=-1) < 0.8).mean() > 0.02, "a panel stayed blank"
