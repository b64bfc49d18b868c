"""Issue 17, item 1: a stale store is never reused. A store (finished or a .partial being
resumed) is reused only while its input holds the same frames, checked by per-frame digests and
the content hash in the store's identity (older stores by their labels); a changed input is
refused in one line naming --overwrite and the first changed structure. The item number is in
each test's name."""

import os

import h5py
import numpy as np
import pytest
from safety_helpers import Interrupt, labelled_frames, model_args, run_cli, write_frames

from probe_base.errors import StoreError
from probe_base.store import extract, load_store


# ---- 1: a stale store ---------------------------------------------------------------------
def test_item1_store_of_a_changed_input_is_refused(toy_adapter, toy_files, tmp_path):
    source = write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 0, 8))
    store = extract(toy_adapter, source, tmp_path / "a.h5", progress=False)
    before = store.read_bytes()
    write_frames(source, labelled_frames(toy_files, 8, 16))  # other frames, same command
    with pytest.raises(
        StoreError, match="the input changed since this store was written: use --overwrite.*structure 0 of"
    ):
        extract(toy_adapter, source, store, progress=False)
    assert store.read_bytes() == before
    data = load_store(extract(toy_adapter, source, store, overwrite=True, progress=False))
    np.testing.assert_allclose(data.energy_ref, [a.get_potential_energy() for a in labelled_frames(toy_files, 8, 16)])


def test_item1_frame_edited_in_place_with_same_size_and_mtime_is_refused(toy_adapter, toy_files, tmp_path, capsys):
    source = write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 0, 6))
    store = tmp_path / "a.h5"
    assert run_cli(capsys, "extract", *model_args(toy_files), "--input", source, "--output", store)[0] == 0
    stat = source.stat()
    lines = source.read_text().splitlines(keepends=True)
    n0 = int(lines[0])
    row = n0 + 2 + 2 + 1  # an atom line of frame 1
    fields = lines[row].split()
    x = fields[1]
    changed = x[:-1] + ("1" if x[-1] != "1" else "2")  # same length: same file size
    lines[row] = lines[row].replace(x, changed, 1)
    source.write_text("".join(lines))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    code, err = run_cli(capsys, "extract", *model_args(toy_files), "--input", source, "--output", store)
    assert code == 2
    assert "the input changed since this store was written: use --overwrite" in err
    assert "structure 1 of" in err and str(store) in err


def test_item1_resume_after_editing_a_stored_frame_is_refused(toy_adapter, toy_files, tmp_path, monkeypatch):
    frames = labelled_frames(toy_files, 0, 30)
    source = write_frames(tmp_path / "a.xyz", frames)
    store = tmp_path / "a.h5"
    original = type(toy_adapter).run
    calls = []

    def dying_run(self, atoms_list, **kw):
        calls.append(1)
        if len(calls) > 2:
            raise Interrupt
        return original(self, atoms_list, **kw)

    monkeypatch.setattr(type(toy_adapter), "run", dying_run)
    with pytest.raises(Interrupt):
        extract(toy_adapter, source, store, batch_size=5, chunk_structures=10, progress=False)
    monkeypatch.setattr(type(toy_adapter), "run", original)
    with h5py.File(store.with_name("a.h5.partial")) as h5:
        assert h5.attrs["n_done"] == 10
    frames[4].positions[0] += 0.3  # a frame already in the .partial
    write_frames(source, frames)
    with pytest.raises(
        StoreError,
        match="a.h5.partial: the input changed since this store was written: use --overwrite.*structure 4 of",
    ):
        extract(toy_adapter, source, store, batch_size=5, chunk_structures=10, progress=False)
    data = load_store(extract(toy_adapter, source, store, batch_size=5, overwrite=True, progress=False))
    assert len(data) == 30
    fresh = toy_adapter.run([frames[4]], members=False)
    np.testing.assert_allclose(data.energy_pred[4], fresh.energies[0], rtol=1e-5)


def test_item1_content_hash_is_part_of_the_store_identity(toy_adapter, toy_files, tmp_path):
    first = load_store(
        extract(
            toy_adapter,
            write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 0, 5)),
            tmp_path / "a.h5",
            progress=False,
        )
    )
    second = load_store(
        extract(
            toy_adapter,
            write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 5, 10)),
            tmp_path / "a.h5",
            overwrite=True,
            progress=False,
        )
    )
    assert len(first.attrs["content_sha256"]) == 64
    assert first.attrs != second.attrs, "a probe's store_identity must tell the two stores apart"


def test_item1_store_written_before_frame_digests_is_checked_by_its_labels(toy_adapter, toy_files, tmp_path):
    source = write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 0, 8))
    store = extract(toy_adapter, source, tmp_path / "a.h5", progress=False)
    with h5py.File(store, "r+") as h5:  # what a format-1 store holds
        del h5["frame_digest"]
        for name in ("content_sha256", "input_sha256"):
            del h5.attrs[name]
        h5.attrs["format_version"] = 1
    before = store.read_bytes()
    assert extract(toy_adapter, source, store, progress=False) == store  # unchanged: reused
    frames = labelled_frames(toy_files, 0, 8)
    frames[5].calc.results["energy"] += 0.01
    write_frames(source, frames)
    with pytest.raises(
        StoreError, match="the input changed since this store was written: use --overwrite.*structure 5 of"
    ):
        extract(toy_adapter, source, store, progress=False)
    assert store.read_bytes() == before
