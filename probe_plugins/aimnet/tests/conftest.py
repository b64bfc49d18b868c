"""Fixtures: tiny AIMNet2 models (the bundled architecture, small widths) exported to
aimnet's v2 ``.pt`` format by ``aimnet export``, built in well under a second each; and
two trained on the fly with ``aimnet train`` on EMT-labelled rattled ethanol."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from probe_aimnet import AIMNet2Adapter, training  # noqa: E402

SAE = {1: -13.568, 6: -1025.277, 8: -2035.571}
TINY = dict(nfeature=4, nshifts=8, ncomb_v=4, hidden=(32, 24), aim_size=32, out_hidden=(16,))
# widths of the declared layers for TINY: afv = nfeature * nshifts, mlps.i = that + 2
# (charge and its weight), conv_a = nfeature * nshifts (scalar part) + nfeature * ncomb_v (vector)
WIDTHS = {"afv": 32, "mlps.0": 34, "mlps.1": 34, "charges": 1, "conv_a": 48, "aim": 32}


@pytest.fixture(scope="session")
def tiny_config():
    return training.small_model_config(**TINY)


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory, tiny_config):
    """Three v2 member files (random weights, SAE baked in, Coulomb moved out)."""
    folder = tmp_path_factory.mktemp("aimnet_models")
    return [
        training.random_model(tiny_config, SAE, folder / f"seed{seed}.pt", seed, folder / "work") for seed in (1, 2, 3)
    ]


def rattled_ethanols(n: int, seed: int = 0, scale=0.08):
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = molecule("CH3CH2OH")
        s = scale[i] if np.ndim(scale) else scale
        atoms.positions += rng.normal(scale=s, size=atoms.positions.shape)
        out.append(atoms)
    return out


@pytest.fixture(scope="session")
def structures():
    from ase.build import molecule

    water = molecule("H2O")
    water.positions += 0.05
    return rattled_ethanols(5) + [water, molecule("CH4")]


def emt_labelled(frames):
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        out.append(atoms)
    return out


@pytest.fixture(scope="session")
def emt_data():
    """Rattled ethanol labelled by ASE's EMT (real labels, offline): train / valid / test."""
    frames = emt_labelled(rattled_ethanols(110, seed=3, scale=np.linspace(0.02, 0.12, 110)))
    order = np.random.default_rng(0).permutation(len(frames))
    frames = [frames[i] for i in order]
    return frames[:80], frames[80:90], frames[90:]


@pytest.fixture(scope="session")
def trained_path(tmp_path_factory, tiny_config, emt_data):
    """A model trained by `aimnet train` (15 short epochs) and exported by `aimnet export`."""
    train, valid, _ = emt_data
    folder = tmp_path_factory.mktemp("aimnet_trained")
    return training.train_from_frames(
        train,
        valid,
        folder / "seed1.pt",
        1,
        epochs=15,
        workdir=folder / "work",
        model_cfg=tiny_config,
        batch_size=8,
        lr=3e-3,
        forces_weight=1.0,
    )


@pytest.fixture(scope="session")
def trained_paths(trained_path, model_paths):
    """An ensemble whose first (probed) member is the trained model."""
    return [trained_path, model_paths[0]]


@pytest.fixture()
def adapter(model_paths):
    return AIMNet2Adapter(model_paths)
