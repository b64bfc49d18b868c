"""Exceptions users see. Each message names the file, the structure and the fix."""


class ProbeError(Exception):
    """Base class of every error mlip-probe raises on purpose."""


class InputError(ProbeError, ValueError):
    """A structure or a dataset cannot be used as given."""


class LabelError(ProbeError, ValueError):
    """The reliability labels cannot be built (e.g. all structures in one class)."""


class ArtifactError(ProbeError):
    """A probe file is missing, corrupted, or unsafe."""


class FingerprintMismatch(ProbeError):
    """A probe was trained on another backbone or on other feature layers."""


class StoreError(ProbeError):
    """A feature store is locked, incomplete or belongs to another run."""


class UnreliablePrediction(ProbeError, RuntimeError):
    """Raised by the ``raise`` policy when the probe flags a prediction as unreliable."""

    def __init__(self, message, reliability=None, atom_importance=None):
        super().__init__(message)
        self.reliability = reliability
        self.atom_importance = atom_importance


class OutputError(ProbeError):
    """An output path cannot be written: an input, a folder, unwritable, or the disk is full."""
