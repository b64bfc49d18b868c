"""The drop-in ASE calculator: ``MyNameCalculator(<your calculator's arguments>,
probe="my.probe")`` where users today write your framework's own calculator.

Without ``probe`` it makes exactly your framework's calculator; with it, that calculator
wrapped so that ``results`` also hold ``reliability``, ``in_domain``, ``atom_importance``...
(``probe_base.calculator.DropInCalculator``). Nothing to fill in here: name your
framework's calculator class in ``plugin.py`` (``calculator_class``, ``models_of_calculator``).
"""

from __future__ import annotations

from probe_base.calculator import DropInCalculator

from .plugin import MyNameAdapter


class MyNameCalculator(DropInCalculator):
    """MyName's ASE calculator with three extra keywords: ``probe`` (a probe file fitted on
    this model), ``probe_policy`` ("ignore", "warn", "raise") and ``probe_threshold``; every
    other argument is MyName's calculator's.

    One class, two forms: without ``probe`` the object made is MyName's own calculator,
    unchanged, and ``isinstance(calc, MyNameCalculator)`` holds for it; with ``probe`` it is
    this class, a ``ProbedCalculator`` (its policy and threshold in ASE ``parameters``).
    """

    adapter = MyNameAdapter

    @classmethod
    def framework_types(cls):
        return (MyNameAdapter.calculator_class(),)
