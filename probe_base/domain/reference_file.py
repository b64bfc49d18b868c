"""The domain's built reference (``BuiltReference``: standardisation, per-element indexes
and scales, the structure scalars' ranges) and its ``.reference`` file: safetensors + JSON,
each index as hash-checked FAISS bytes, never unpickled; ``is_reference_file`` tells it from
a feature store, ``load_built_reference`` loads one for ``probe fit``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from probe_base.domain.index_params import ReferenceError
from probe_base.domain.reference_index import ElementIndex

FORMAT = "mlip-probe-reference/1"
METADATA_KEY = "mlip_probe_reference"


class BuiltReference:
    """A domain reference built by ``build_reference``: standardisation, per-element
    indexes and scales, the structure scalars' ranges; ``DomainModel.fit`` takes it (with
    calibration structures) in place of a FeatureSet. ``save`` / ``load``: a
    ``.reference`` file (safetensors + JSON, hash-checked, never unpickled)."""

    def __init__(self, mean, std, indexes, scales, ranges, n_neighbors, info):
        self.mean_, self.std_ = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.indexes, self.scales, self.ranges = indexes, scales, ranges
        self.n_neighbors, self.info = int(n_neighbors), info

    @property
    def n_features(self) -> int:
        return len(self.mean_)

    def summary(self) -> str:
        parts = [
            f"Z={z}: {len(ix)} atoms {ix.kind} ({ix.nbytes() / 1e6:.1f} MB)" for z, ix in sorted(self.indexes.items())
        ]
        return "reference: " + ", ".join(parts)

    def save(self, path):
        from safetensors.numpy import save_file

        from probe_base.io.paths import atomic_write

        arrays, index_meta = {"mean": self.mean_, "std": self.std_}, {}
        for z, index in self.indexes.items():
            arrays[f"index.{z}"], index_meta[str(z)] = index.state()
        meta = {
            "format": FORMAT,
            "n_neighbors": self.n_neighbors,
            "indexes": index_meta,
            "scale": {str(z): s for z, s in self.scales.items()},
            "ranges": {name: list(r) for name, r in self.ranges.items()},
            "info": self.info,
        }
        atomic_write(Path(path), lambda tmp: save_file(arrays, str(tmp), metadata={METADATA_KEY: json.dumps(meta)}))

    @classmethod
    def load(cls, path) -> BuiltReference:
        from safetensors import SafetensorError, safe_open
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise ReferenceError(f"{path}: reference file not found; build one with `probe reference build`")
        try:
            with safe_open(str(path), framework="np") as handle:
                meta = json.loads((handle.metadata() or {})[METADATA_KEY])
            arrays = load_file(str(path))
        except (SafetensorError, OSError, KeyError, ValueError) as exc:
            raise ReferenceError(
                f"{path}: not a valid .reference file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                "re-create it with `probe reference build`"
            ) from None
        if meta.get("format") != FORMAT:
            raise ReferenceError(f"{path}: unsupported reference format {meta.get('format')!r}; expected {FORMAT}")
        try:
            indexes = {
                int(z): ElementIndex.from_state(arrays[f"index.{z}"], m, f"{path}: index of Z={z}")
                for z, m in meta["indexes"].items()
            }
        except ReferenceError as exc:
            raise ReferenceError(f"{exc}; re-create it with `probe reference build`") from None
        except KeyError as exc:
            raise ReferenceError(f"{path}: lacks {exc}; re-create it with `probe reference build`") from None
        return cls(
            arrays["mean"],
            arrays["std"],
            indexes,
            {int(z): float(s) for z, s in meta["scale"].items()},
            {name: tuple(r) for name, r in meta["ranges"].items()},
            meta["n_neighbors"],
            meta.get("info", {}),
        )


def is_reference_file(path) -> bool:
    """Whether ``path`` is a ``.reference`` file (its header says so), not a feature store."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            return METADATA_KEY in (handle.metadata() or {})
    except Exception:  # not safetensors at all (an HDF5 store, a folder, nothing)
        return False


def load_built_reference(path, fingerprint: dict, fit_store="") -> BuiltReference:
    """A ``.reference`` file for ``probe fit``, refused if built from another backbone's or
    other layers' features than the fitting store's."""
    from probe_base.errors import FingerprintMismatch

    built = BuiltReference.load(path)
    mine = built.info.get("fingerprint") or {}
    key = ("adapter", "weights_sha256", "layers", "widths")
    if tuple(mine.get(k) for k in key) != tuple(fingerprint.get(k) for k in key):
        raise FingerprintMismatch(
            f"{path}: this reference was built from features of another backbone or other layers "
            f"({mine.get('adapter')} {mine.get('layers')}) than {fit_store} ({fingerprint.get('adapter')} "
            f"{fingerprint.get('layers')}): build it from stores extracted with the same --adapter, --model and --layers"
        )
    return built
