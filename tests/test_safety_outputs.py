"""Issue 17, items 2, 3 and 9: what a command's output may replace. An output onto one of the
command's own inputs, or onto a file of another kind, is refused and leaves it untouched;
--overwrite keeps the old store until the new one is complete (also under torchrun, until every
shard is done); written files follow the user's umask. The item number is in each test's name."""

import os

import numpy as np
import pytest
from safety_helpers import labelled_frames, model_args, run_cli, write_frames

from probe_base.artifact import load_probe, save_probe
from probe_base.errors import InputError, OutputError
from probe_base.store import extract, load_store


# ---- 2: inputs overwritten ----------------------------------------------------------------
def test_item2_fit_output_onto_its_store_is_refused(heldout_store, tmp_path, capsys):
    store = tmp_path / "s.h5"
    store.write_bytes(heldout_store.read_bytes())
    code, err = run_cli(capsys, "fit", "--store", store, "--output", store)
    assert code == 2 and f"{store}: --output is also an input of this command" in err
    assert store.read_bytes() == heldout_store.read_bytes()


def test_item2_predict_output_onto_its_input_is_refused(fitted_probe, toy_files, tmp_path, capsys, no_models_loaded):
    source = write_frames(tmp_path / "b.xyz", labelled_frames(toy_files, 0, 4))
    before = source.read_bytes()
    code, err = run_cli(
        capsys, "predict", *model_args(toy_files, 1), "--probe", fitted_probe, "--input", source, "--output", source
    )
    assert code == 2 and "--output is also an input" in err and str(source) in err
    assert source.read_bytes() == before


def test_item2_extract_output_onto_input_or_model_is_refused(toy_adapter, toy_files, tmp_path):
    source = write_frames(tmp_path / "b.xyz", labelled_frames(toy_files, 0, 4))
    before = source.read_bytes()
    with pytest.raises(OutputError, match="also an input"):
        extract(toy_adapter, source, source, progress=False)
    with pytest.raises(OutputError, match="also an input"):
        extract(toy_adapter, source, toy_files["models"][0], progress=False)
    assert source.read_bytes() == before


def test_item2_output_that_is_a_file_of_another_kind_is_refused(heldout_store, toy_files, tmp_path, capsys):
    source = write_frames(tmp_path / "data.xyz", labelled_frames(toy_files, 0, 4))
    notes = tmp_path / "notes.xyz"
    notes.write_text("not a store")
    code, err = run_cli(capsys, "fit", "--store", heldout_store, "--output", notes)
    assert code == 2 and "notes.xyz: exists and is not a probe file; refusing to replace it" in err
    code, err = run_cli(capsys, "extract", *model_args(toy_files), "--input", source, "--output", notes, "--overwrite")
    assert code == 2 and "exists and is not a feature store" in err
    assert notes.read_text() == "not a store"


# ---- 3: --overwrite destroys before it succeeds ----------------------------------------------
def test_item3_overwrite_keeps_the_old_store_until_the_new_one_is_complete(toy_adapter, toy_files, tmp_path, capsys):
    good = write_frames(tmp_path / "good.xyz", labelled_frames(toy_files, 0, 6))
    store = tmp_path / "good.h5"
    assert run_cli(capsys, "extract", *model_args(toy_files), "--input", good, "--output", store)[0] == 0
    before = store.read_bytes()
    frames = labelled_frames(toy_files, 10, 20)
    bad = frames[3].copy()
    bad.calc = None  # the 4th frame has no energy
    frames[3] = bad
    source = write_frames(tmp_path / "new.xyz", frames)
    argv = ["extract", *model_args(toy_files), "--input", source, "--output", store, "--overwrite", "--batch-size", "2"]
    code, err = run_cli(capsys, *argv)
    assert code == 2 and "structure 3: no reference energy" in err and "resume" in err
    assert store.read_bytes() == before, "the old store is untouched by a failed --overwrite"
    assert len(load_store(store)) == 6
    frames[3] = labelled_frames(toy_files, 13, 14)[0]
    write_frames(source, frames)
    assert run_cli(capsys, *argv)[0] == 0
    data = load_store(store)
    np.testing.assert_allclose(data.energy_ref, [a.get_potential_energy() for a in frames])


def test_item3_torchrun_overwrite_keeps_the_old_store_until_every_shard_is_done(toy_adapter, toy_files, tmp_path):
    from probe_base import distributed

    class Rank(distributed.Group):
        """One rank of a 2-rank job, run in this process one after the other."""

        def __init__(self, rank, selection):
            super().__init__(rank, 2, "cpu")
            self.selection = selection

        def barrier(self):
            pass

        def broadcast(self, value):
            return self.selection

    source = write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 0, 20))
    store = tmp_path / "s.h5"
    selection = distributed._selection(source, ":")
    options = dict(batch_size=5, progress=False)
    for rank in (1, 0):  # rank 0 last: it writes the store over both shards
        distributed.extract_sharded(toy_adapter, source, store, Rank(rank, selection), **options)
    old_energies = load_store(store).energy_ref
    frames = labelled_frames(toy_files, 20, 40)
    frames[2] = frames[2].copy()
    frames[2].calc = None  # rank 0's block has a frame without energy
    write_frames(source, frames)
    with pytest.raises(InputError, match="structure 2: no reference energy"):
        distributed.extract_sharded(toy_adapter, source, store, Rank(0, selection), overwrite=True, **options)
    np.testing.assert_array_equal(load_store(store).energy_ref, old_energies)
    frames[2] = labelled_frames(toy_files, 22, 23)[0]
    write_frames(source, frames)
    for rank in (1, 0):
        distributed.extract_sharded(toy_adapter, source, store, Rank(rank, selection), overwrite=True, **options)
    np.testing.assert_allclose(load_store(store).energy_ref, [a.get_potential_energy() for a in frames])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.xyz", "s.h5", "s.h5.shards"]


# ---- 9: owner-only files ------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_item9_written_files_follow_the_umask(umask, fitted_probe, toy_files, tmp_path, capsys):
    previous = os.umask(umask)
    try:
        artifact = load_probe(fitted_probe)
        probe = tmp_path / "shared.probe"
        save_probe(probe, artifact.classifier, artifact.label, artifact.fingerprint, artifact.info["info"])
        scored = tmp_path / "scored.xyz"
        assert (
            run_cli(
                capsys,
                "predict",
                *model_args(toy_files, 1),
                "--probe",
                probe,
                "--input",
                toy_files["train"],
                "--index",
                ":3",
                "--output",
                scored,
            )[0]
            == 0
        )
    finally:
        os.umask(previous)
    for path in (probe, scored):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, oct(path.stat().st_mode)
