import threading

import ase.io
import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from probe_base.errors import InputError, StoreError
from probe_base.store import _WriterLock, extract, load_store


def test_store_holds_features_labels_and_members(heldout_store, toy_adapter, toy_files):
    data = load_store(heldout_store)
    frames = ase.io.read(toy_files["heldout"], ":")
    assert len(data) == len(frames)
    assert data.features.shape == (sum(len(a) for a in frames), toy_adapter.n_features)
    np.testing.assert_array_equal(data.atomic_numbers, np.concatenate([a.numbers for a in frames]))
    np.testing.assert_allclose(data.energy_ref, [a.get_potential_energy() for a in frames])
    assert data.member_energies.shape == (len(frames), 3)
    np.testing.assert_allclose(data.member_energies[:, 0], data.energy_pred)
    assert np.all(data.force_rmse > 0) and np.all(data.member_force_std > 0)
    out = toy_adapter.run(frames[:2], members=False)
    np.testing.assert_allclose(data.features[: len(frames[0])], out.features[0], atol=1e-5)
    assert data.fingerprint == toy_adapter.fingerprint()


def test_float16_features(toy_adapter, toy_files, tmp_path):
    path = extract(toy_adapter, toy_files["heldout"], tmp_path / "s.h5", index=":40", dtype="float16", progress=False)
    with h5py.File(path) as h5:
        assert h5["features"].dtype == np.float16
    ref = load_store(path)
    assert ref.features.dtype == np.float32 and len(ref) == 40


class Interrupt(Exception):
    pass


def test_interrupted_extraction_resumes_without_recomputing(toy_adapter, toy_files, tmp_path, monkeypatch):
    path = tmp_path / "resumed.h5"
    seen = []
    original = type(toy_adapter).run

    def dying_run(self, atoms_list, **kw):
        if len(seen) >= 5:  # die in the middle of the third chunk of 2 batches
            raise Interrupt()
        seen.append(len(atoms_list))
        return original(self, atoms_list, **kw)

    monkeypatch.setattr(type(toy_adapter), "run", dying_run)
    with pytest.raises(Interrupt):
        extract(
            toy_adapter, toy_files["heldout"], path, index=":120", batch_size=10, chunk_structures=20, progress=False
        )
    partial = path.with_name(path.name + ".partial")
    assert partial.exists() and not path.exists()
    with h5py.File(partial) as h5:
        assert h5.attrs["n_done"] == 40
    with pytest.raises(StoreError, match="unfinished"):
        load_store(path)

    seen.clear()
    resumed_calls = []

    def counting_run(self, atoms_list, **kw):
        resumed_calls.append(kw["indices"][0])
        return original(self, atoms_list, **kw)

    monkeypatch.setattr(type(toy_adapter), "run", counting_run)
    extract(toy_adapter, toy_files["heldout"], path, index=":120", batch_size=10, chunk_structures=20, progress=False)
    assert resumed_calls[0] == 40, "resume must start after the last flushed chunk"
    monkeypatch.setattr(type(toy_adapter), "run", original)
    fresh = extract(toy_adapter, toy_files["heldout"], tmp_path / "fresh.h5", index=":120", progress=False)
    a, b = load_store(path), load_store(fresh)
    np.testing.assert_array_equal(a.source_index, np.arange(120))
    np.testing.assert_allclose(a.features, b.features, atol=1e-6)
    np.testing.assert_allclose(a.energy_pred, b.energy_pred)


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "locked.h5"
    with _WriterLock(path):
        result = {}

        def other():
            try:
                with _WriterLock(path):
                    result["ok"] = True
            except StoreError as exc:
                result["error"] = str(exc)

        # flock locks belong to open file descriptions: a second open in another thread conflicts
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert "another process is writing" in result["error"]


def test_existing_store_of_other_input_is_not_overwritten(toy_adapter, toy_files, tmp_path):
    path = extract(toy_adapter, toy_files["heldout"], tmp_path / "s.h5", index=":20", progress=False)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="--overwrite"):
        extract(toy_adapter, toy_files["heldout"], path, index=":30", progress=False)
    assert path.read_bytes() == before


def _labelled(atoms, energy=1.0):
    atoms = atoms.copy()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((len(atoms), 3)))
    return atoms


@pytest.mark.parametrize(
    "problem,message",
    [
        ("missing_energy", "structure 25: no reference energy"),
        ("nan", "structure 25: positions contain NaN"),
        ("empty", "structure 25: has no atoms"),
        ("element", "structure 25: element\\(s\\) Fe not known"),
    ],
)
def test_bad_structure_named_and_earlier_work_kept(problem, message, toy_adapter, toy_files, tmp_path):
    frames = ase.io.read(toy_files["heldout"], ":30")
    bad = frames[25].copy()
    if problem == "missing_energy":
        bad.calc = None
    elif problem == "nan":
        bad.positions[3] = np.nan
        bad = _labelled(bad)
    elif problem == "empty":
        bad = _labelled(Atoms())
    elif problem == "element":
        bad.numbers[0] = 26
        bad = _labelled(bad)
    frames[25] = bad
    source = tmp_path / "bad.xyz"
    ase.io.write(source, frames)
    with pytest.raises(InputError, match=message) as info:
        extract(toy_adapter, source, tmp_path / "bad.h5", batch_size=10, chunk_structures=10, progress=False)
    assert str(source) in str(info.value)
    partial = tmp_path / "bad.h5.partial"
    with h5py.File(partial) as h5:
        assert h5.attrs["n_done"] == 25, "the 25 good structures before the bad one are kept"
    # fixing the file and re-running resumes and finishes
    frames[25] = _labelled(ase.io.read(toy_files["heldout"], 25))
    ase.io.write(source, frames)
    data = load_store(extract(toy_adapter, source, tmp_path / "bad.h5", batch_size=10, progress=False))
    assert len(data) == 30


def test_named_energy_key_and_missing_forces(toy_adapter, toy_files, tmp_path):
    frames = ase.io.read(toy_files["heldout"], ":5")
    for atoms in frames:
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.calc = None
    source = tmp_path / "keys.xyz"
    ase.io.write(source, frames)
    with pytest.raises(InputError, match="--forces-key"):
        extract(toy_adapter, source, tmp_path / "k.h5", energy_key="REF_energy", progress=False)
    data = load_store(
        extract(toy_adapter, source, tmp_path / "k2.h5", energy_key="REF_energy", with_forces=False, progress=False)
    )
    assert np.all(np.isnan(data.force_rmse)) and len(data) == 5
    with pytest.raises(InputError, match="'wrong' not found"):
        extract(toy_adapter, source, tmp_path / "k3.h5", energy_key="wrong", with_forces=False, progress=False)


def test_one_atom_structure_is_scored(toy_adapter, toy_files, tmp_path):
    single = _labelled(Atoms("Cu", positions=[[0, 0, 0]]), energy=0.0)
    source = tmp_path / "single.xyz"
    ase.io.write(source, [single] + ase.io.read(toy_files["heldout"], ":3"))
    data = load_store(extract(toy_adapter, source, tmp_path / "single.h5", progress=False))
    assert data.n_atoms[0] == 1 and np.all(np.isfinite(data.features))
