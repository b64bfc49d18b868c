"""Output paths, checked before any work: never an input of the same command, never an
existing folder or a file of another kind, always in a folder we can write to."""

from __future__ import annotations

import errno
import json
import os
import secrets
import struct
import tempfile
from pathlib import Path

from probe_base.errors import OutputError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
METADATA_KEY = "mlip_probe"  # the safetensors metadata entry that makes a file a .probe
KIND_NAMES = {"store": "feature store (HDF5)", "probe": "probe file", "extxyz": "text structure file"}


def partial_path(path) -> Path:
    """Where an unfinished output of ``path`` (a store's extraction, a reference's build)
    keeps what is done so far, to resume from: ``path.partial``."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


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


# ---- writing an output atomically -------------------------------------------------------
def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see half a file, and
    a failed write (a full disk) leaves the old file as it was. The file gets the usual
    permissions (the umask), as any other file the user writes."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_temporary(path)
    except OSError as exc:
        raise OutputError(
            f"{path}: cannot be written ({exc.strerror or exc}); choose another "
            "output path or a folder you can write to"
        ) from None
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # writers such as safetensors make it 0o600
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        reason = _io_failure(exc)
        if reason is None:
            raise
        kept = "the existing file is unchanged" if path.exists() else "nothing was written"
        fix = "free disk space" if reason in DISK_FULL else "fix the output path"
        raise OutputError(f"{path}: writing failed ({reason}); {kept}: {fix} and run the command again") from None


DISK_FULL = {os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT)}


def _io_failure(exc) -> str | None:
    """Why a write failed, if it was the file system (an OSError, or a writer such as
    safetensors reporting the OS error in its own exception); None for anything else."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    from safetensors import SafetensorError  # imported here: the CLI's checks stay light

    if isinstance(exc, SafetensorError):
        text = str(exc)
        return next(
            (reason for reason in DISK_FULL if reason in text),
            text if "os error" in text or "I/O error" in text else None,
        )
    return None


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_temporary(path: Path) -> Path:
    """An empty new file beside ``path``, created with mode 0o666 less the umask (not the
    0o600 of ``mkstemp``)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path.parent))
