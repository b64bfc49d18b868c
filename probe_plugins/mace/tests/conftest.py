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
