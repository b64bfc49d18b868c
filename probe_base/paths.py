"""Output paths, checked before any work: never an input of the same command, never an
existing folder or a file of another kind, always in a folder we can write to."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

from .errors import OutputError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KIND_NAMES = {"store": "feature store (HDF5)", "probe": "probe file", "extxyz": "text structure file"}


def same_file(a, b) -> bool:
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def is_feature_store(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == HDF5_SIGNATURE


def is_probe_file(path) -> bool:
    """A safetensors file carrying mlip-probe metadata (read from its JSON header only)."""
    from .artifact import METADATA_KEY

    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 * 2**20:
                return False
            header = json.loads(handle.read(length))
        return METADATA_KEY in header.get("__metadata__", {})
    except (OSError, struct.error, ValueError, AttributeError):
        return False


def _is_text(path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(8192)
    return b"\x00" not in head and not head.startswith(HDF5_SIGNATURE)


KIND_CHECKS = {"store": is_feature_store, "probe": is_probe_file, "extxyz": _is_text}


def check_writable_folder(folder, flag="--output") -> None:
    """``folder`` (created later if missing) can take new files: tried, not guessed, so a
    read-only mount or a folder of another user is found before any work."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{existing}: is a file, so {folder} cannot be created; choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(
            f"{existing}: cannot write there ({exc.strerror}); choose another {flag} or a folder you can write to"
        ) from None


def check_output_file(path, kind: str, inputs=(), flag="--output") -> Path:
    """Refuse ``path`` as an output of ``kind`` ("store", "probe", "extxyz") before any work."""
    path = Path(path)
    for other in inputs:
        if other is not None and same_file(path, other):
            raise OutputError(
                f"{path}: {flag} is also an input of this command; writing it would "
                f"destroy that input: choose another {flag}"
            )
    if path.is_dir():
        raise OutputError(
            f"{path}: is a folder; {flag} must be a file path (e.g. "
            f"{path / ('out.h5' if kind == 'store' else 'out.' + kind)})"
        )
    if path.exists() and not KIND_CHECKS[kind](path):
        raise OutputError(
            f"{path}: exists and is not a {KIND_NAMES[kind]}; refusing to replace "
            f"it: choose another {flag} or delete it"
        )
    check_writable_folder(path.parent, flag)
    return path


def check_output_dir(path, flag="--output-dir") -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is a file, not a folder; choose another {flag}")
    check_writable_folder(path, flag)
    return path
