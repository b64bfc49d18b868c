import pytest

from probe_base.cli import main
from probe_base.errors import ProbeError
from probe_base.plugins import PLUGINS_ENV_VAR, available_adapters, get_adapter_class
from probe_base.toy import ToyAdapter


def test_builtin_toy_adapter_is_found_through_entry_points(monkeypatch):
    monkeypatch.delenv(PLUGINS_ENV_VAR, raising=False)
    info = available_adapters()["toy"]
    assert info.adapter_class is ToyAdapter
    assert info.distribution == "mlip-probe" and info.version


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


def test_plugins_command_lists_distribution(capsys, monkeypatch):
    monkeypatch.delenv(PLUGINS_ENV_VAR, raising=False)
    assert main(["plugins", "-v"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "mlip-probe" in out and "ToyAdapter" in out


def test_broken_plugin_is_listed_and_collisions_name_both_plugins(monkeypatch, capsys):
    """llm-style manager: one bad entry point does not take `probe plugins` down, and an
    adapter name registered twice is refused with both plugins named."""
    import importlib.metadata
    import types

    from probe_base import hookimpl, plugins

    good = importlib.metadata.EntryPoint("toy", "probe_base.toy", "probe")
    broken = importlib.metadata.EntryPoint("bad", "probe_base.no_such_module", "probe")
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points",
                        lambda group: [good, broken] if group == "probe" else [])
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
        plugins._manager.cache_clear()
        plugins._adapters.cache_clear()
