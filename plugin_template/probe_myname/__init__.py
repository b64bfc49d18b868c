"""MyName backbone plugin for mlip-probe: ``--adapter myname``."""

from .plugin import MyNameAdapter

__all__ = ["MyNameAdapter"]
