"""Issues 17 (items 7 and 8) and 16: stores that fit, evaluate and calibrate cannot use. An empty
store, an unfinished extraction (.partial) passed as a store, and a store extracted with
--no-labels (which holds features and members only) are each refused in one line, and calibrate
leaves the probe unchanged."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from safety_helpers import Interrupt, labelled_frames, model_args, run_cli, write_frames

from probe_base.errors import StoreError
from probe_base.store import extract, load_store


# ---- 7: an empty store ---------------------------------------------------------------------
def empty_store(source_store, path):
    path.write_bytes(Path(source_store).read_bytes())
    with h5py.File(path, "r+") as h5:
        for dataset in h5.values():
            dataset.resize(0, axis=0)
        h5.attrs["n_done"] = 0
    return path


def test_item7_fit_and_evaluate_on_an_empty_store(heldout_store, fitted_probe, tmp_path, capsys):
    empty = empty_store(heldout_store, tmp_path / "empty.h5")
    code, err = run_cli(capsys, "fit", "--store", empty, "--output", tmp_path / "p.probe")
    assert code == 2 and "empty.h5: the feature store holds no structures" in err
    code, err = run_cli(
        capsys, "evaluate", "--probe", fitted_probe, "--store", empty, "--output-dir", tmp_path / "report"
    )
    assert code == 2 and "holds no structures" in err


# ---- 8: an unfinished extraction as a store ------------------------------------------------
def test_item8_a_partial_passed_as_store_is_refused(toy_adapter, toy_files, tmp_path, monkeypatch, capsys):
    source = write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 0, 20))
    original = type(toy_adapter).run

    def dying_run(self, atoms_list, **kw):
        if kw["indices"][0] >= 10:
            raise Interrupt
        return original(self, atoms_list, **kw)

    monkeypatch.setattr(type(toy_adapter), "run", dying_run)
    with pytest.raises(Interrupt):
        extract(toy_adapter, source, tmp_path / "a.h5", batch_size=5, chunk_structures=5, progress=False)
    partial = tmp_path / "a.h5.partial"
    with pytest.raises(
        StoreError, match="a.h5.partial: an unfinished extraction, not a finished feature store.*then use .*a.h5$"
    ):
        load_store(partial)
    code, err = run_cli(capsys, "fit", "--store", partial, "--output", tmp_path / "p.probe")
    assert code == 2 and "unfinished extraction" in err


# ---- issue 16: a store without labels --------------------------------------------------------
def unlabelled(frames):
    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = None
        out.append(atoms)
    return out


def test_no_labels_store_holds_features_and_members_only(toy_adapter, toy_files, tmp_path, capsys, fitted_probe):
    frames = unlabelled(labelled_frames(toy_files, 0, 12))
    source = write_frames(tmp_path / "reference.xyz", frames)
    store = tmp_path / "reference.h5"
    code, err = run_cli(capsys, "extract", *model_args(toy_files), "--input", source, "--output", store)
    assert code == 2 and "no reference energy" in err
    assert (
        run_cli(capsys, "extract", *model_args(toy_files), "--input", source, "--output", store, "--no-labels")[0] == 0
    )
    data = load_store(store)
    assert not data.has_labels and len(data) == 12
    assert np.isnan(data.energy_ref).all() and np.isnan(data.force_rmse).all()
    assert np.isnan(data.atom_force_error).all()
    assert data.features.shape == (sum(len(a) for a in frames), toy_adapter.n_features)
    assert data.member_energies.shape == (12, 3) and data.member_force_std is not None
    np.testing.assert_allclose(data.energy_pred, toy_adapter.run(frames, members=False).energies, rtol=1e-5)
    lazy = load_store(store, lazy=True)
    assert not lazy.has_labels and lazy.padded([0, 1])[0].shape[0] == 2
    code, err = run_cli(capsys, "fit", "--store", store, "--output", tmp_path / "p.probe")
    assert code == 2 and "reference.h5: the feature store has no labels" in err
    code, err = run_cli(
        capsys, "evaluate", "--probe", fitted_probe, "--store", store, "--output-dir", tmp_path / "report"
    )
    assert code == 2 and "has no labels" in err
    before = fitted_probe.read_bytes()
    code, err = run_cli(
        capsys,
        "calibrate",
        "--probe",
        fitted_probe,
        "--store",
        store,
        "--target-risk",
        "0.2",
        "--output",
        tmp_path / "c.probe",
    )
    assert code == 2 and "has no labels" in err and fitted_probe.read_bytes() == before
    # a labelled store of the same frames says it has labels; the rerun is a no-op
    assert load_store(
        extract(
            toy_adapter,
            write_frames(tmp_path / "l.xyz", labelled_frames(toy_files, 0, 12)),
            tmp_path / "l.h5",
            progress=False,
        )
    ).has_labels
    assert (
        run_cli(capsys, "extract", *model_args(toy_files), "--input", source, "--output", store, "--no-labels")[0] == 0
    )
