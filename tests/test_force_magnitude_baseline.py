"""The per-atom map baseline "predicted |F|": the store keeps the backbone's predicted force
magnitude per atom, evaluate scores it like the other map baselines, and a store written
before it was kept (format 2) still reads, with the baseline reported as not scored."""

import json
import shutil

import ase.io
import h5py
import numpy as np
import pytest
import torch

from probe_base.net.atom_errors import atom_map_quality
from probe_base.store import extract, load_store
from probe_base.workflow.evaluate import PREDICTED_FORCE, evaluate_probe, metrics_table, write_evaluation

torch.set_num_threads(1)
FIELD = "atom_force_pred_norm"


def _to_format2(path):
    """Make ``path`` what the code before format 3 wrote: the same datasets less |F_pred|.
    The identity (input, selection, backbone, frame digests) never covered datasets."""
    with h5py.File(path, "r+") as h5:
        del h5[FIELD]
        h5.attrs["format_version"] = 2


def test_store_keeps_the_norm_of_the_predicted_forces(heldout_store, toy_adapter, toy_files):
    data = load_store(heldout_store)
    frames = ase.io.read(toy_files["heldout"], ":40")
    out = toy_adapter.run(frames, members=False)
    expected = np.concatenate([np.linalg.norm(f, axis=1) for f in out.forces])
    assert data.atom_force_pred_norm.dtype == np.float32
    assert data.atom_force_pred_norm.shape == data.atom_force_error.shape
    np.testing.assert_allclose(data.atom_force_pred_norm[: len(expected)], expected, rtol=1e-5, atol=1e-5)
    with h5py.File(heldout_store) as h5:
        assert h5.attrs["format_version"] == 3 and h5[FIELD].fletcher32
    # carried per atom by subset, like the force errors
    part = data.subset([3, 1])
    a, b = data.offsets[3], data.offsets[4]
    np.testing.assert_array_equal(part.atom_force_pred_norm[: b - a], data.atom_force_pred_norm[a:b])
    assert len(part.atom_force_pred_norm) == len(part.atomic_numbers)


def test_without_labels_the_magnitudes_are_kept_and_without_forces_they_are_nan(
    heldout_store, toy_adapter, toy_files, tmp_path
):
    labelled = load_store(heldout_store).subset(np.arange(8))
    unlabelled = load_store(
        extract(toy_adapter, toy_files["heldout"], tmp_path / "u.h5", index=":8", labels=False, progress=False)
    )
    assert np.isnan(unlabelled.atom_force_error).all()
    np.testing.assert_allclose(unlabelled.atom_force_pred_norm, labelled.atom_force_pred_norm, rtol=1e-5, atol=1e-5)
    no_forces = load_store(
        extract(toy_adapter, toy_files["heldout"], tmp_path / "e.h5", index=":8", with_forces=False, progress=False)
    )
    assert no_forces.atom_force_pred_norm.shape == (no_forces.offsets[-1],)
    assert np.isnan(no_forces.atom_force_pred_norm).all()


class Interrupt(Exception):
    pass


def _interrupted(toy_adapter, toy_files, path, monkeypatch):
    """Extraction of 60 structures killed after the first 20 are flushed: its .partial."""
    original, calls = type(toy_adapter).run, []

    def dying_run(self, atoms_list, **kw):
        if len(calls) >= 3:
            raise Interrupt()
        calls.append(1)
        return original(self, atoms_list, **kw)

    monkeypatch.setattr(type(toy_adapter), "run", dying_run)
    with pytest.raises(Interrupt):
        extract(
            toy_adapter, toy_files["heldout"], path, index=":60", batch_size=10, chunk_structures=20, progress=False
        )
    monkeypatch.setattr(type(toy_adapter), "run", original)
    partial = path.with_name(path.name + ".partial")
    with h5py.File(partial) as h5:
        assert h5.attrs["n_done"] == 20
    return partial


def test_resumed_partials_new_and_old_layout(toy_adapter, toy_files, tmp_path, monkeypatch):
    fresh = load_store(extract(toy_adapter, toy_files["heldout"], tmp_path / "fresh.h5", index=":60", progress=False))
    # a .partial of this format: resumed, its magnitudes are those of a fresh extraction
    path = tmp_path / "new.h5"
    _interrupted(toy_adapter, toy_files, path, monkeypatch)
    resumed = load_store(extract(toy_adapter, toy_files["heldout"], path, index=":60", batch_size=10, progress=False))
    np.testing.assert_allclose(resumed.atom_force_pred_norm, fresh.atom_force_pred_norm, rtol=1e-5, atol=1e-5)
    assert resumed.attrs == fresh.attrs  # the content identity
    # a .partial begun by the code before format 3: finished in its own layout, never half-filled
    path = tmp_path / "old.h5"
    _to_format2(_interrupted(toy_adapter, toy_files, path, monkeypatch))
    resumed = load_store(extract(toy_adapter, toy_files["heldout"], path, index=":60", batch_size=10, progress=False))
    assert resumed.atom_force_pred_norm is None
    with h5py.File(path) as h5:
        assert FIELD not in h5 and h5.attrs["format_version"] == 2
    np.testing.assert_allclose(resumed.atom_force_error, fresh.atom_force_error, rtol=1e-5, atol=1e-6)
    assert resumed.attrs == fresh.attrs


@pytest.fixture(scope="module")
def new_evaluation(fitted_probe, heldout_store):
    return evaluate_probe(fitted_probe, heldout_store, n_bootstrap=20)


def test_evaluate_scores_the_predicted_force_map_from_the_stored_magnitudes(
    new_evaluation, fitted_probe, heldout_store, tmp_path
):
    q = new_evaluation["atom_maps"][PREDICTED_FORCE]
    assert PREDICTED_FORCE not in new_evaluation["atom_maps_skipped"]
    assert set(q) == set(new_evaluation["atom_maps"]["per-element mean error"])  # same keys in metrics.json
    held = new_evaluation["arrays"]["data"]
    maps = [held.atom_force_pred_norm[held.offsets[i] : held.offsets[i + 1]] for i in range(len(held))]
    assert q == atom_map_quality(maps, held.atom_force_error, held.offsets)
    assert q["n_structures"] > 100 and 0 <= q["hit_rate"] <= 1 and np.isfinite(q["spearman"])
    assert f"per-atom map '{PREDICTED_FORCE}': top atom among the 3 worst forces" in metrics_table(new_evaluation)

    # reversed magnitudes in the file: the figure must follow them
    perturbed = tmp_path / "perturbed.h5"
    shutil.copy(heldout_store, perturbed)
    with h5py.File(perturbed, "r+") as h5:
        h5[FIELD][:] = -h5[FIELD][:]
    other = evaluate_probe(fitted_probe, perturbed, n_bootstrap=20)["atom_maps"][PREDICTED_FORCE]
    assert other["spearman"] == pytest.approx(-q["spearman"], abs=1e-9)
    assert other["hit_rate"] != q["hit_rate"]


def test_a_format2_store_reads_and_evaluate_says_why_the_baseline_is_missing(
    new_evaluation, fitted_probe, heldout_store, tmp_path
):
    old = tmp_path / "old.h5"
    shutil.copy(heldout_store, old)
    _to_format2(old)
    data = load_store(old)
    assert data.atom_force_pred_norm is None and data.subset([0, 2]).atom_force_pred_norm is None
    assert data.attrs == load_store(heldout_store).attrs  # the same store to a probe: its held-out part is used

    evaluation = evaluate_probe(fitted_probe, old, n_bootstrap=20)
    assert PREDICTED_FORCE not in evaluation["atom_maps"]
    why = evaluation["atom_maps_skipped"][PREDICTED_FORCE]
    assert "written before predicted forces were kept" in why and "probe extract --overwrite" in why
    # the other maps are unchanged (compared as JSON: a one-element map's Spearman is NaN)
    others = {k: v for k, v in new_evaluation["atom_maps"].items() if k != PREDICTED_FORCE}
    assert json.dumps(evaluation["atom_maps"]) == json.dumps(others)
    assert f"per-atom map '{PREDICTED_FORCE}': not scored: {why}" in metrics_table(evaluation)
    folder = write_evaluation(evaluation, tmp_path / "report")
    assert json.loads((folder / "metrics.json").read_text())["atom_maps_skipped"] == {PREDICTED_FORCE: why}
    assert f"Not scored: {PREDICTED_FORCE}:" in (folder / "report.html").read_text()
