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
