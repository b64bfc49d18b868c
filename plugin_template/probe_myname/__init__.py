"""MyName backbone plugin for mlip-probe: ``--adapter myname``, and
``MyNameCalculator(..., probe="my.probe")`` for ASE."""

from .calculator import MyNameCalculator
from .plugin import MyNameAdapter

__all__ = ["MyNameAdapter", "MyNameCalculator"]
