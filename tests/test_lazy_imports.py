"""`import probe_base`, `probe --help` and `probe plugins` leave torch, scikit-learn and ASE
unimported (they cost seconds of start-up); the public names still resolve."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "sklearn", "ase", "scipy", "h5py")
REPO = Path(__file__).resolve().parents[1]

CHECK = """
import runpy, sys
sys.argv = ["probe"] + sys.argv[1:]
try:
    runpy.run_module("probe_base.cli", run_name="__main__")
except SystemExit:
    pass
print("HEAVY:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _heavy_modules_after(*argv, env=None):
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(heavy=HEAVY), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    line = [text for text in result.stdout.splitlines() if text.startswith("HEAVY:")][-1]
    return result.stdout, [m for m in line[len("HEAVY:") :].split(",") if m]


@pytest.mark.parametrize("argv", [["--help"], ["plugins"], ["fit", "--help"]])
def test_light_commands_import_no_heavy_library(argv):
    out, heavy = _heavy_modules_after(*argv)
    assert heavy == []
    assert "probe" in out


def test_plugins_lists_installed_plugins_from_metadata_alone(installed_fake_plugin):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(installed_fake_plugin), os.environ.get("PYTHONPATH")])),
    }
    out, heavy = _heavy_modules_after("plugins", env=env)
    assert "fake         fake-probe-plugin 1.2" in out
    assert heavy == [], "the plugin module (it imports torch) was loaded to list it"


def test_public_names_resolve_lazily():
    code = (
        "import sys, probe_base; assert 'torch' not in sys.modules; "
        "from probe_base import Adapter, FeatureLayer, BackboneOutput, attach, ProbeClassifier, "
        "load_probe, hookimpl, ProbeError; "
        "from probe_base.adapter import Adapter as A; assert A is Adapter; "
        "assert set(probe_base.__all__) <= set(dir(probe_base)); print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import probe_base

    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        probe_base.missing  # noqa: B018


def test_missing_plugin_modules_are_found_without_importing_their_package(tmp_path, monkeypatch):
    from probe_base.plugins import _module_exists

    package = tmp_path / "heavy_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('the package was imported')\n")
    (package / "plugin.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _module_exists("heavy_plugin_pkg.plugin")
    assert not _module_exists("heavy_plugin_pkg.no_such_module")
    assert not _module_exists("no_such_top_level_package.plugin")
    assert "heavy_plugin_pkg" not in sys.modules
