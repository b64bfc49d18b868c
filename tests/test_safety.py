"""Issue 17: nothing lost, nothing stale. Each test reproduces one defect a careful user hit
(the item number is in the test's name) and checks the one-line error or the right result."""

import contextlib
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
import torch

from probe_base import store as store_module
from probe_base.artifact import atomic_write, load_probe, save_probe
from probe_base.cli import main
from probe_base.errors import ArtifactError, InputError, OutputError, StoreError
from probe_base.store import extract, load_store
from probe_base.store import write as store_writer  # where extract's appends are patched


# ---- helpers ------------------------------------------------------------------------------
def run_cli(capsys, *argv):
    """(exit code, the stderr lines) of `probe ARGV`; every error must be one line."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # stderr also carries progress bars (tqdm), which rewrite their line with \r
    errors = [line for line in err.splitlines() if line.startswith("error")]
    if code != 0:
        assert len(errors) == 1 and "\n" not in errors[0], err[-3000:]
    return code, errors[0] if errors else ""


def labelled_frames(toy_files, start, stop):
    return ase.io.read(toy_files["heldout"], f"{start}:{stop}")


def write_frames(path, frames):
    ase.io.write(path, frames, format="extxyz")
    return path


def model_args(toy_files, n=3):
    return ["--adapter", "toy", "--model", *toy_files["models"][:n]]


def unlabelled(frames):
    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = None
        out.append(atoms)
    return out


class Interrupt(Exception):
    """A process killed in the middle of an extraction."""


@pytest.fixture
def no_models_loaded(monkeypatch):
    """Fails the test if the command loads a backbone: its error must come before."""
    from probe_base.cli import commands

    def refuse(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the input was checked")

    monkeypatch.setattr(commands, "_adapter", refuse)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only=False):
    """A small tmpfs at ``path`` (root only); skips the test where mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder this process cannot write to: chmod for a normal user, a read-only tmpfs for
    root (who ignores permissions)."""
    if os.geteuid() != 0:
        path.mkdir()
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
    else:
        with tmpfs(path, "1m", read_only=True):
            yield path


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


# ---- 5: frame numbers with --index ----------------------------------------------------------
def test_item5_errors_and_source_index_use_the_file_frame_numbers(toy_adapter, toy_files, tmp_path):
    frames = labelled_frames(toy_files, 0, 12)
    frames[3] = frames[3].copy()
    frames[3].calc = None
    source = write_frames(tmp_path / "a.xyz", frames)
    with pytest.raises(InputError, match="a.xyz, structure 3: no reference energy"):
        extract(toy_adapter, source, tmp_path / "a.h5", index="2:", progress=False)
    frames[3] = labelled_frames(toy_files, 3, 4)[0]
    write_frames(source, frames)
    data = load_store(extract(toy_adapter, source, tmp_path / "b.h5", index="1::3", progress=False))
    np.testing.assert_array_equal(data.source_index, [1, 4, 7, 10])
    np.testing.assert_allclose(data.energy_ref, [frames[i].get_potential_energy() for i in (1, 4, 7, 10)])
    tail = load_store(extract(toy_adapter, source, tmp_path / "c.h5", index="-2:", progress=False))
    np.testing.assert_array_equal(tail.source_index, [10, 11])


def test_item5_select_reports_the_file_frame(fitted_probe, toy_files, tmp_path, capsys):
    out = tmp_path / "picked.xyz"
    code, _ = run_cli(
        capsys,
        "select",
        *model_args(toy_files, 1),
        "--probe",
        fitted_probe,
        "--input",
        toy_files["train"],
        "--index",
        "100:",
        "--n",
        "3",
        "--output",
        out,
    )
    assert code == 0
    pool = ase.io.read(toy_files["train"], ":")
    for atoms in ase.io.read(out, ":"):
        frame = atoms.info["probe_pool_index"]
        assert frame >= 100
        np.testing.assert_allclose(atoms.positions, pool[frame].positions)


# ---- 6: a damaged probe file ----------------------------------------------------------------
def rewrite_probe(source, target, edit_meta=None, edit_tensors=None):
    """A crafted file: edited, then hashed again (as a consistent but wrong file would be),
    so the checks behind the content hash are reached."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from probe_base.artifact import HASH_KEY, content_sha256

    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    meta = json.loads(metadata["mlip_probe"])
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    metadata["mlip_probe"] = json.dumps(meta)
    metadata[HASH_KEY] = content_sha256(tensors, metadata["mlip_probe"])
    save_file(tensors, str(target), metadata=metadata)
    return target


def drop(prefix, names=None):
    def edit(tensors):
        for key in [k for k in tensors if k.startswith(prefix) and (names is None or k[len(prefix) :] in names)]:
            del tensors[key]

    return edit


@pytest.mark.parametrize(
    "damage,message",
    [
        (
            dict(edit_meta=lambda m: m.update(n_members=9)),
            "declares 9 members but the file holds weights of members \\[0, 1, 2, 3, 4\\]",
        ),
        (
            dict(edit_tensors=drop("member4.")),
            "declares 5 members but the file holds weights of members \\[0, 1, 2, 3\\]",
        ),
        (dict(edit_tensors=drop("member2.", {"head.0.weight"})), "member 2 lacks \\['head.0.weight'\\]"),
        (dict(edit_tensors=drop("member1.", {"extras_low"})), "member 1 holds other buffers than member 0"),
        (dict(edit_meta=lambda m: m.update(temperature=0.0)), "temperature is 0.0, not a positive finite number"),
        (dict(edit_meta=lambda m: m.update(temperature=float("nan"))), "temperature is nan"),
        (dict(edit_meta=lambda m: m.update(prior_log_odds=float("inf"))), "prior_log_odds is inf"),
    ],
)
def test_item6_damaged_probe_is_refused(fitted_probe, tmp_path, damage, message):
    assert load_probe(fitted_probe).info["n_members"] == 5
    bad = rewrite_probe(fitted_probe, tmp_path / "bad.probe", **damage)
    with pytest.raises(ArtifactError, match=f"bad.probe: .*{message}.*re-create it with `probe fit`"):
        load_probe(bad)


def test_item6_extra_tensors_and_buffers_absent_from_every_member_still_load(fitted_probe, heldout_store, tmp_path):
    data = load_store(heldout_store).subset(range(20))
    reference = load_probe(fitted_probe).classifier.predict_proba(data)

    def add_domain_model(tensors):
        tensors["domain.reference_features"] = torch.zeros(7, 3)

    extra = rewrite_probe(fitted_probe, tmp_path / "extra.probe", edit_tensors=add_domain_model)
    np.testing.assert_array_equal(load_probe(extra).classifier.predict_proba(data), reference)
    older = rewrite_probe(
        fitted_probe,
        tmp_path / "older.probe",
        edit_tensors=lambda t: [drop(f"member{i}.", {"extras_low", "extras_high"})(t) for i in range(5)],
    )
    assert load_probe(older).classifier.predict_proba(data).shape == reference.shape


# ---- 7: tracebacks instead of messages ------------------------------------------------------
def test_item7_missing_or_folder_input_before_models_load(fitted_probe, toy_files, tmp_path, capsys, no_models_loaded):
    for given, expected in [
        (tmp_path / "missing.xyz", "missing.xyz: file not found; check --input"),
        (tmp_path, "is a folder, not a structure file"),
    ]:
        code, err = run_cli(
            capsys,
            "predict",
            *model_args(toy_files, 1),
            "--probe",
            fitted_probe,
            "--input",
            given,
            "--output",
            tmp_path / "out.xyz",
        )
        assert code == 2 and expected in err


@pytest.mark.parametrize(
    "defect,expected",
    [
        ("not_utf8", "structure 2: line 9 is not UTF-8 text"),
        ("count", "structure 2: line 9 should give the number of atoms but reads 'abc'"),
        ("truncated", "structure 3: is truncated"),
    ],
)
def test_item7_unreadable_extxyz_names_the_frame(
    defect, expected, toy_files, tmp_path, capsys, no_models_loaded, fitted_probe
):
    frames = labelled_frames(toy_files, 0, 4)
    source = write_frames(tmp_path / "a.xyz", frames)
    raw = source.read_bytes().split(b"\n")
    header_of_2 = sum(len(f) + 2 for f in frames[:2])  # 0-based line of frame 2's atom count
    if defect == "not_utf8":  # its comment line
        raw[header_of_2 + 1] = raw[header_of_2 + 1] + b" note=\xff\xfe"
        expected = expected.replace("line 9", f"line {header_of_2 + 2}")
    elif defect == "count":
        raw[header_of_2] = b"abc"
        expected = expected.replace("line 9", f"line {header_of_2 + 1}")
    else:
        raw = raw[:-3]
    source.write_bytes(b"\n".join(raw))
    code, err = run_cli(
        capsys,
        "predict",
        *model_args(toy_files, 1),
        "--probe",
        fitted_probe,
        "--input",
        source,
        "--output",
        tmp_path / "out.xyz",
    )
    assert code == 2 and f"a.xyz, {expected}" in err, err


def test_item7_bad_index_and_eval_fraction(heldout_store, toy_files, tmp_path, capsys, no_models_loaded):
    code, err = run_cli(
        capsys,
        "extract",
        *model_args(toy_files),
        "--input",
        toy_files["train"],
        "--output",
        tmp_path / "s.h5",
        "--index",
        "abc",
    )
    assert code == 2 and "--index 'abc' is not an ase.io index" in err
    for fraction in ("1", "1.5", "-0.5"):  # refused by the parser, with the range
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "fit",
                    "--store",
                    str(heldout_store),
                    "--output",
                    str(tmp_path / "p.probe"),
                    "--eval-fraction",
                    fraction,
                ]
            )
        assert exit_info.value.code == 2
        assert f"argument --eval-fraction: {fraction} is out of range: must be >= 0 and < 1" in capsys.readouterr().err
    assert not (tmp_path / "p.probe").exists()


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


def test_item7_read_only_output_folder_is_refused_before_any_work(
    heldout_store, fitted_probe, toy_files, tmp_path, capsys, monkeypatch
):
    import probe_base.workflow.evaluate as evaluate_module
    import probe_base.workflow.fit as fit_module

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output folder was checked")

    with read_only_folder(tmp_path / "ro") as folder:
        # each step reads the store through its own module's name
        monkeypatch.setattr(fit_module, "load_store", no_work)
        monkeypatch.setattr(evaluate_module, "load_store", no_work)
        for argv in (
            ["fit", "--store", heldout_store, "--output", folder / "p.probe"],
            ["evaluate", "--probe", fitted_probe, "--store", heldout_store, "--output-dir", folder / "report"],
        ):
            code, err = run_cli(capsys, *argv)
            assert code == 2 and f"{folder}: cannot write there" in err, err
        from probe_base.cli import commands

        monkeypatch.setattr(commands, "_adapter", no_work)
        for argv in (
            ["extract", *model_args(toy_files), "--input", toy_files["train"], "--output", folder / "s.h5"],
            [
                "predict",
                *model_args(toy_files, 1),
                "--probe",
                fitted_probe,
                "--input",
                toy_files["train"],
                "--output",
                folder / "scored.xyz",
            ],
        ):
            code, err = run_cli(capsys, *argv)
            assert code == 2 and "cannot write there" in err, err


def test_item7_output_dir_that_is_a_file(fitted_probe, heldout_store, tmp_path, capsys):
    existing = tmp_path / "report"
    existing.write_text("my notes")
    code, err = run_cli(capsys, "evaluate", "--probe", fitted_probe, "--store", heldout_store, "--output-dir", existing)
    assert code == 2 and "report: exists and is a file, not a folder" in err
    assert existing.read_text() == "my notes"


# ---- 8: silently accepted -----------------------------------------------------------------
@pytest.mark.parametrize(
    "index,expected",
    [("100", "has 8 frame(s) (0 to 7), no frame 100"), ("5:2", "--index 5:2 selects no frames"), ("-9", "no frame -9")],
)
def test_item8_an_index_that_selects_nothing_is_refused(index, expected, toy_adapter, toy_files, tmp_path):
    source = write_frames(tmp_path / "a.xyz", labelled_frames(toy_files, 0, 8))
    with pytest.raises(InputError, match=expected.replace("(", "\\(").replace(")", "\\)")):
        extract(toy_adapter, source, tmp_path / "a.h5", index=index, progress=False)
    assert not list(tmp_path.glob("a.h5*"))


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


# ---- 10: misleading device message ----------------------------------------------------------
def test_item10_cuda_without_cuda_says_so(fitted_probe, toy_files, tmp_path, capsys, monkeypatch, no_models_loaded):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (
        [
            "predict",
            *model_args(toy_files, 1),
            "--probe",
            fitted_probe,
            "--input",
            toy_files["train"],
            "--output",
            tmp_path / "o.xyz",
            "--device",
            "cuda",
        ],
        [
            "extract",
            *model_args(toy_files),
            "--input",
            toy_files["train"],
            "--output",
            tmp_path / "s.h5",
            "--device",
            "cuda:1",
        ],
    ):
        code, err = run_cli(capsys, *argv)
        assert code == 2 and "CUDA is not available" in err and "--device cpu" in err
        assert "non-compiled" not in err


# ---- issue 16: a store without labels --------------------------------------------------------
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


def test_item10_devices_the_machine_has_pass_and_others_are_named(monkeypatch):
    from probe_base.cli import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for device in ("cpu", "cuda", "cuda:1"):
        check_device(device)
    with pytest.raises(
        InputError, match="--device cuda:2: this machine has 2 CUDA device\\(s\\) \\(cuda:0 to cuda:1\\)"
    ):
        check_device("cuda:2")
    with pytest.raises(InputError, match="'gpu0' is not a torch device"):
        check_device("gpu0")
