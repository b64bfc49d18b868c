"""MACE backbone plugin for mlip-probe."""

from .calculator import MACECalculator
from .plugin import MACEAdapter

__all__ = ["MACEAdapter", "MACECalculator"]
