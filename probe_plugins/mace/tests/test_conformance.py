"""The core's adapter conformance suite, run on a tiny MACE ensemble.

Fixtures ``adapter`` (an ensemble of three model files) and ``structures`` come from
conftest.py.
"""

from probe_base.testing import AdapterConformance


class TestMACEConformance(AdapterConformance):
    pass


import pytest  # noqa: E402
from probe_mace import MACECalculator  # noqa: E402

from probe_base.testing import CalculatorConformance  # noqa: E402


class TestMACECalculatorConformance(CalculatorConformance):
    @pytest.fixture()
    def make_calculator(self, model_paths):
        return lambda **kw: MACECalculator(model_paths=str(model_paths[0]), device="cpu", **kw)
