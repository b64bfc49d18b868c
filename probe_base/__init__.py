"""PROBE: post-hoc reliability of MLIP predictions from frozen backbone features."""

from .adapter import Adapter, BackboneOutput, FeatureLayer
from .errors import (
    ArtifactError,
    FingerprintMismatch,
    InputError,
    LabelError,
    ProbeError,
    StoreError,
    UnreliablePrediction,
)
from .hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "Adapter", "BackboneOutput", "FeatureLayer", "hookimpl", "attach", "ProbeClassifier",
    "load_probe", "ProbeError", "InputError", "LabelError", "ArtifactError",
    "FingerprintMismatch", "StoreError", "UnreliablePrediction",
]


def __getattr__(name):
    # Lazy: keep `import probe_base` light for plugins that only need the adapter contract.
    if name == "attach":
        from .calculator import attach

        return attach
    if name == "ProbeClassifier":
        from .classifier import ProbeClassifier

        return ProbeClassifier
    if name == "load_probe":
        from .artifact import load_probe

        return load_probe
    raise AttributeError(name)
