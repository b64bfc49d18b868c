import tomllib
from pathlib import Path

import pytest

from probe_base.cli import main
from probe_base.errors import ProbeError
from probe_base.plugins import PLUGINS_ENV_VAR, available_adapters, get_adapter_class
from probe_base.toy import ToyAdapter

REPO = Path(__file__).resolve().parents[1]


def test_toy_adapter_is_registered_by_the_tests_not_installed(monkeypatch):
    """conftest.py registers the toy adapter through the plugin manager; mlip-probe itself
    declares no adapter entry point, so `probe plugins` does not advertise it."""
    monkeypatch.delenv(PLUGINS_ENV_VAR, raising=False)
    info = available_adapters()["toy"]
    assert info.adapter_class is ToyAdapter and info.plugin == "toy"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "probe" not in project.get("entry-points", {}), "the core installs no adapter plugin"


def test_installed_plugin_is_found_through_its_entry_point(installed_fake_plugin, monkeypatch):
    monkeypatch.delenv(PLUGINS_ENV_VAR, raising=False)
    info = available_adapters()["fake"]
    assert info.adapter_class.__module__ == "fake_probe_plugin"
    assert (info.plugin, info.distribution, info.version) == ("fake", "fake-probe-plugin", "1.2")


def test_env_var_restricts_plugins(monkeypatch):
    monkeypatch.setenv(PLUGINS_ENV_VAR, "")
    assert available_adapters() == {}
    monkeypatch.setenv(PLUGINS_ENV_VAR, "toy")
    assert list(available_adapters()) == ["toy"]


def test_unknown_adapter_error_lists_installed(monkeypatch):
    monkeypatch.setenv(PLUGINS_ENV_VAR, "")
    with pytest.raises(ProbeError, match="no adapter named 'mace'.*restricts loading"):
        get_adapter_class("mace")


def test_adapter_by_import_path():
    assert get_adapter_class("probe_base.toy:ToyAdapter") is ToyAdapter
    with pytest.raises(ProbeError, match="cannot import adapter"):
        get_adapter_class("probe_base.toy:Missing")


def test_plugins_command_lists_distribution(installed_fake_plugin, capsys, monkeypatch):
    monkeypatch.delenv(PLUGINS_ENV_VAR, raising=False)
    assert main(["plugins", "-v"]) == 0
    out = capsys.readouterr().out
    assert "fake         fake-probe-plugin 1.2  (fake_probe_plugin.FakeAdapter)" in out
    assert "toy" in out and "ToyAdapter" in out  # the tests' in-process plugin, with its class


def test_broken_plugin_is_listed_and_collisions_name_both_plugins(monkeypatch, capsys):
    """llm-style manager: one bad entry point does not take `probe plugins` down, and an
    adapter name registered twice is refused with both plugins named."""
    import importlib.metadata
    import types

    from probe_base import hookimpl, plugins

    good = importlib.metadata.EntryPoint("toy", "probe_base.toy", "probe")
    broken = importlib.metadata.EntryPoint("bad", "probe_base.no_such_module", "probe")
    monkeypatch.setattr(
        plugins.importlib.metadata, "entry_points", lambda group: [good, broken] if group == "probe" else []
    )
    monkeypatch.delenv(PLUGINS_ENV_VAR, raising=False)
    plugins._manager.cache_clear()
    plugins._adapters.cache_clear()
    try:
        assert list(available_adapters()) == ["toy"]
        assert "ModuleNotFoundError" in plugins.plugin_problems().broken["bad"]
        assert main(["plugins"]) == 0
        out = capsys.readouterr().out
        assert "toy" in out and "bad" in out and "BROKEN" in out

        class Impostor(ToyAdapter):
            name = "toy"

        impostor = types.SimpleNamespace(register_adapters=hookimpl(lambda register: register(Impostor)))
        plugins.register_plugin(impostor, name="zz-impostor")
        assert available_adapters()["toy"].adapter_class is ToyAdapter  # the first one stays
        with pytest.raises(ProbeError, match="registered by .*'toy'.* and .*'zz-impostor'"):
            get_adapter_class("toy")
    finally:
        plugins.unregister_plugin("zz-impostor")
        plugins._manager.cache_clear()
        plugins._adapters.cache_clear()
