"""The drop-in ASE calculator: ``MyNameCalculator(<your calculator's arguments>,
probe="my.probe")`` where users today write your framework's own calculator. Nothing to
fill in: it makes the calculator ``MyNameAdapter.ase_calculator`` names."""

from __future__ import annotations

from probe_base.integrations.calculator import DropInCalculator

from .plugin import MyNameAdapter


class MyNameCalculator(DropInCalculator):
    """MyName's ASE calculator with three extra keywords: ``probe`` (a probe file fitted on
    this model), ``probe_policy`` ("ignore", "warn", "raise") and ``probe_threshold``; every
    other argument is MyName's calculator's. Without ``probe`` the object made is MyName's
    own calculator (``isinstance(calc, MyNameCalculator)`` holds); with it, a
    ``ProbedCalculator`` (policy and threshold in ASE ``parameters``)."""

    adapter = MyNameAdapter
