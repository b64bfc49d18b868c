"""The core's adapter conformance suite, run on a tiny AIMNet2 ensemble.

Fixtures ``adapter`` (an ensemble of three v2 model files) and ``structures`` come from
conftest.py.
"""

from probe_base.testing import AdapterConformance


class TestAIMNet2Conformance(AdapterConformance):
    pass


import pytest  # noqa: E402

from probe_base.testing import CalculatorConformance  # noqa: E402


class TestAIMNet2CalculatorConformance(CalculatorConformance):
    @pytest.fixture()
    def make_calculator(self, model_paths):
        from probe_aimnet import AIMNet2ASE

        return lambda **kw: AIMNet2ASE(str(model_paths[0]), **kw)
