"""The core's adapter conformance suite on MyName models (fixtures in conftest.py)."""

from probe_myname import MyNameAdapter

from probe_base.testing import AdapterConformance


class TestMyNameConformance(AdapterConformance):
    pass


def test_entry_point_finds_the_adapter():
    """After `pip install`, the `probe` entry point must lead to this adapter."""
    from probe_base.plugins import available_adapters

    info = available_adapters().get(MyNameAdapter.name)
    assert info is not None, "entry point missing: [project.entry-points.probe] in pyproject.toml"
    assert info.adapter_class is MyNameAdapter and info.distribution == "probe-myname"
