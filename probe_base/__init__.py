"""PROBE: post-hoc reliability of MLIP predictions from frozen backbone features.

Public names are imported on first use (module ``__getattr__``): ``import probe_base``
and the ``probe`` command's start-up stay free of torch, scikit-learn and ASE until a
name that needs them is touched.
"""

from probe_base.errors import (
    ArtifactError,
    FingerprintMismatch,
    InputError,
    LabelError,
    ProbeError,
    StoreError,
    UnreliablePrediction,
)
from probe_base.hookspecs import hookimpl

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "Adapter": "adapter",
    "BackboneOutput": "adapter",
    "FeatureLayer": "adapter",
    "attach": "integrations.calculator",
    "ProbeClassifier": "net.classifier",
    "Probe": "probe",
    "LabelSpec": "labels",
    "DomainModel": "domain.model",
    "load_probe": "artifact",
}

__all__ = [
    "Adapter",
    "BackboneOutput",
    "FeatureLayer",
    "hookimpl",
    "attach",
    "ProbeClassifier",
    "Probe",
    "LabelSpec",
    "DomainModel",
    "load_probe",
    "ProbeError",
    "InputError",
    "LabelError",
    "ArtifactError",
    "FingerprintMismatch",
    "StoreError",
    "UnreliablePrediction",
]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'probe_base' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
