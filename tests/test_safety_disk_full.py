"""Issue 17, item 4: a full disk. Out of space while extracting, the chunks already written stay
in a .partial that the same command resumes (no space for the next chunk is found before HDF5
writes, and a real full tmpfs gives a clean error, not a crash); a probe or scores are written
atomically, so a failed write leaves the existing file unchanged and a one-line error. The item
number is in each test's name."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from safety_helpers import labelled_frames, run_cli, tmpfs, write_frames

from probe_base import store as store_module
from probe_base.artifact import atomic_write
from probe_base.errors import OutputError, StoreError
from probe_base.store import extract, load_store
from probe_base.store import write as store_writer  # where extract's appends are patched


# ---- 4: disk full -------------------------------------------------------------------------
def test_item4_enospc_while_writing_keeps_the_partial_resumable(toy_adapter, toy_files, tmp_path, monkeypatch):
    source = write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 0, 30))
    store = tmp_path / "a.h5"
    real_append, appended = store_writer._append, []

    def append_until_disk_full(h5, rows):
        if appended:
            raise OSError(errno.ENOSPC, "No space left on device")
        appended.append(1)
        real_append(h5, rows)

    monkeypatch.setattr(store_writer, "_append", append_until_disk_full)
    with pytest.raises(StoreError) as info:
        extract(toy_adapter, source, store, batch_size=5, chunk_structures=10, progress=False)
    message = str(info.value)
    assert "No space left on device" in message and "run the same command again to resume" in message
    assert "\n" not in message
    with h5py.File(store.with_name("a.h5.partial")) as h5:
        assert h5.attrs["n_done"] == 10
    monkeypatch.setattr(store_writer, "_append", real_append)
    data = load_store(extract(toy_adapter, source, store, batch_size=5, chunk_structures=10, progress=False))
    assert len(data) == 30 and np.array_equal(data.source_index, np.arange(30))


def test_item4_no_space_for_the_next_chunk_is_refused_before_hdf5_writes(toy_adapter, toy_files, tmp_path, monkeypatch):
    source = write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 0, 30))
    store = tmp_path / "a.h5"
    real_fallocate, reserved = os.posix_fallocate, []

    def fallocate_until_full(fd, offset, length):
        reserved.append(length)
        if len(reserved) > 2:  # the new store and the first chunk fit, the second does not
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fallocate(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate_until_full)
    with pytest.raises(
        store_module.DiskFull,
        match="not enough disk space for the next 10 structures.*the 10 structures before it are saved",
    ):
        extract(toy_adapter, source, store, batch_size=5, chunk_structures=10, progress=False)
    assert not list(tmp_path.glob("*.reserve"))
    monkeypatch.setattr(os, "posix_fallocate", real_fallocate)
    assert len(load_store(extract(toy_adapter, source, store, batch_size=5, chunk_structures=10, progress=False))) == 30


EXTRACT_INTO = """
import sys
from probe_base import toy
from probe_base.store import extract
from probe_base.errors import ProbeError
adapter = toy.ToyAdapter(sys.argv[1:2])
try:
    extract(adapter, sys.argv[2], sys.argv[3], batch_size=10, chunk_structures=20, progress=False)
    print("done")
except ProbeError as exc:
    print("error:", exc)
"""


def test_item4_extract_into_a_nearly_full_file_system(toy_files, tmp_path):
    """A real full tmpfs: a clean error, a .partial that still opens, and a resume once
    space is freed (in a subprocess: HDF5 out of space used to crash the process)."""
    source = write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 0, 120))
    mount = tmp_path / "small"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-c", EXTRACT_INTO, str(toy_files["models"][0]), str(source), str(mount / "a.h5")]
    with tmpfs(mount, "1100k"):
        first = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert first.returncode == 0, first.stderr[-2000:]
        assert first.stdout.startswith("error:") and "not enough disk space" in first.stdout
        assert "HDF5" not in first.stderr and "Traceback" not in first.stderr, first.stderr[-2000:]
        with h5py.File(mount / "a.h5.partial") as h5:
            saved = int(h5.attrs["n_done"])
        subprocess.run(["mount", "-o", "remount,size=4m", str(mount)], check=True)
        second = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert second.stdout.strip() == "done", second.stdout + second.stderr[-2000:]
        data = load_store(mount / "a.h5")
        assert len(data) == 120 and saved > 0
        np.testing.assert_array_equal(data.source_index, np.arange(120))


def test_item4_disk_full_while_writing_a_probe_or_scores(fitted_probe, tmp_path):
    target = tmp_path / "keep.probe"
    target.write_bytes(fitted_probe.read_bytes())

    def disk_full(tmp):
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(
        OutputError,
        match="keep.probe: writing failed \\(No space left on device\\); "
        "the existing file is unchanged: free disk space",
    ):
        atomic_write(target, disk_full)
    assert target.read_bytes() == fitted_probe.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.probe"]


def test_item4_fit_into_a_full_file_system_gives_one_line(heldout_store, tmp_path, capsys):
    mount = tmp_path / "small"
    with tmpfs(mount, "8k"):
        code, err = run_cli(
            capsys,
            *("fit", "--store", heldout_store, "--output", mount / "x.probe", "--epochs", "2", "--seeds", "1"),
            *("--quantile", "0.5"),
        )
        assert code == 2 and "x.probe: writing failed (No space left on device)" in err
        assert list(mount.iterdir()) == []
