"""Helpers shared by the safety tests (tests/test_safety_*.py): the CLI run that insists on a
one-line error (and `probe predict` with the first toy model through it), frames written as
extxyz, the toy models' arguments, a simulated kill, a small tmpfs or a folder this process
cannot write to, and a .probe crafted consistently wrong."""

import contextlib
import json
import os
import subprocess
from pathlib import Path

import ase.io
import pytest

from probe_base.cli import main


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


class Interrupt(Exception):
    """A process killed in the middle of an extraction."""


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


def predict(capsys, toy_files, probe, source, output, *extra):
    """`probe predict` with the first toy model: (exit code, error line)."""
    model = ("--adapter", "toy", "--model", toy_files["models"][0])
    return run_cli(capsys, "predict", *model, "--probe", probe, "--input", source, "--output", output, *extra)
