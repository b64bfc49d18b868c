"""The core's adapter conformance suite, run on a tiny AIMNet2 ensemble.

Fixtures ``adapter`` (an ensemble of three v2 model files) and ``structures`` come from
conftest.py.
"""

from probe_base.testing import AdapterConformance


class TestAIMNet2Conformance(AdapterConformance):
    pass
