"""``summary.json``, the OOD benchmark's record of its data, backbones and stores: each
stage merges its figures in under a file lock, since several backbones' environments may
run stages at once."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from benchmarks.ood_data.layout import SUMMARY


def _merge(into: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


@contextmanager
def _locked(path: Path):
    """Several backbones' environments may update summary.json at once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_summary(update: dict) -> None:
    with _locked(SUMMARY):
        summary = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
        _merge(summary, update)
        partial = SUMMARY.with_name(SUMMARY.name + ".partial")
        partial.write_text(json.dumps(summary, indent=1, default=float))
        os.replace(partial, SUMMARY)
