"""The core's adapter conformance suite, run on a tiny MACE ensemble.

Fixtures ``adapter`` (an ensemble of three model files) and ``structures`` come from
conftest.py.
"""

from probe_base.testing import AdapterConformance


class TestMACEConformance(AdapterConformance):
    pass
