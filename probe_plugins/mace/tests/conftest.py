"""Fixtures: tiny randomly initialised ScaleShiftMACE models, built in well under a
second each and saved the way `mace_run_train` saves them (a pickled nn.Module)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

import mace  # noqa: E402,F401  (mace before e3nn)
from e3nn import o3  # noqa: E402
from mace import modules  # noqa: E402
from probe_mace import MACEAdapter  # noqa: E402

ELEMENTS = [1, 6, 8]  # H, C, O
E0S = {1: -13.568, 6: -1025.277, 8: -2035.571}


def build_tiny_mace(
    seed: int, hidden_irreps: str = "8x0e+8x1o", num_interactions: int = 2, r_max: float = 4.0
) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = modules.ScaleShiftMACE(
        r_max=r_max,
        num_bessel=4,
        num_polynomial_cutoff=5,
        max_ell=2,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=num_interactions,
        num_elements=len(ELEMENTS),
        hidden_irreps=o3.Irreps(hidden_irreps),
        MLP_irreps=o3.Irreps("4x0e"),
        atomic_energies=np.array([E0S[z] for z in ELEMENTS]),
        avg_num_neighbors=6.0,
        atomic_numbers=ELEMENTS,
        correlation=2,
        gate=torch.nn.functional.silu,
        radial_MLP=[8, 8],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    return model.double().eval()


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory):
    """Three member files of an equivariant (L=1) ensemble."""
    folder = tmp_path_factory.mktemp("mace_models")
    paths = []
    for seed in (1, 2, 3):
        path = folder / f"seed{seed}.model"
        torch.save(build_tiny_mace(seed), path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def scalar_model_path(tmp_path_factory):
    """A max_L=0 model, like the benchmark backbones."""
    path = tmp_path_factory.mktemp("mace_scalar") / "scalar.model"
    torch.save(build_tiny_mace(7, hidden_irreps="8x0e"), path)
    return path


def _ethanols(n: int, seed: int = 0):
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        out.append(atoms)
    return out


@pytest.fixture(scope="session")
def structures():
    from ase.build import molecule

    water = molecule("H2O")
    water.positions += 0.05
    return _ethanols(5) + [water, molecule("CH4")]


@pytest.fixture()
def adapter(model_paths):
    return MACEAdapter(model_paths)


@pytest.fixture(scope="session")
def probe_file(model_paths, tmp_path_factory):
    """A small probe fitted on the first member's features of rattled ethanols: (paths of
    the ``plain`` (cut 0.5) and ``strict`` (cut 1.01: every step unreliable) files, the
    classifier, its features)."""
    from ase.build import molecule

    from probe_base.artifact import save_probe
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.store import FeatureSet

    rng = np.random.default_rng(5)
    structures = []
    for scale in np.linspace(0.0, 0.25, 48):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
        structures.append(atoms)
    adapter = MACEAdapter(model_paths[:1])
    out = adapter.run(structures, members=False)
    n = np.array([len(a) for a in structures])
    X = FeatureSet(
        np.concatenate(out.features),
        np.concatenate([a.numbers for a in structures]),
        np.concatenate([[0], np.cumsum(n)]),
        out.energies,
    )
    y = (np.arange(len(structures)) < 24).astype(int)  # small rattles are "reliable"
    clf = ProbeClassifier(hidden=16, heads=2, max_epochs=5, patience=5, seed=0).fit(X, y)
    paths = {}
    for name, threshold in (("plain", 0.5), ("strict", 1.01)):
        path = tmp_path_factory.mktemp("probe") / f"{name}.probe"
        save_probe(
            path, clf, LabelSpec("energy", threshold=0.1), adapter.fingerprint(), {"decision_threshold": threshold}
        )
        paths[name] = path
    return paths, clf, X
