"""The core's adapter conformance suite on SevenNet-0 (11Jul2024 + 22May2024 as the
ensemble). Fixtures ``adapter`` and ``structures`` come from conftest.py."""

from probe_base.testing import AdapterConformance


class TestSevenNetConformance(AdapterConformance):
    pass


import pytest  # noqa: E402

from probe_base.testing import CalculatorConformance  # noqa: E402


class TestSevenNetCalculatorConformance(CalculatorConformance):
    @pytest.fixture()
    def make_calculator(self):
        from conftest import ENSEMBLE
        from probe_sevenn import SevenNetCalculator

        return lambda **kw: SevenNetCalculator(ENSEMBLE[0], device="cpu", **kw)
