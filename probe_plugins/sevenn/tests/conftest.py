"""Fixtures: the pretrained checkpoints bundled with sevenn (no download, no training)
and a few ethanol configurations of the shared rMD17-style test set."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from probe_base.testing import skip_outside_ci

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="No tensor product accelerator")

ETHANOL = Path(__file__).resolve().parents[4] / "shared" / "data" / "ethanol" / "test_MD.xyz"
ENSEMBLE = ["7net-0", "7net-0_22May2024"]  # same training data (MPtrj, PBE), two trainings


def _ethanol(n: int, start: int = 0):
    """``n`` labelled ethanol configurations (energy, forces in a SinglePointCalculator)."""
    import ase.io

    if not ETHANOL.exists():
        skip_outside_ci(
            f"{ETHANOL} not found (the shared data set, ../shared/data next to the repository)",
            "CI must provide the shared data set there",
        )
    return ase.io.read(ETHANOL, f"{start}:{start + n}")


@pytest.fixture(scope="session")
def structures():
    """Four ethanols and one periodic crystal (exercises cell shifts in a batch)."""
    from ase.build import bulk

    salt = bulk("NaCl", "rocksalt", a=5.64)
    salt.positions += np.random.default_rng(0).normal(scale=0.03, size=salt.positions.shape)
    return _ethanol(4) + [salt]


@pytest.fixture(scope="session")
def adapter():
    from probe_sevenn import SevenNetAdapter

    return SevenNetAdapter(ENSEMBLE)


@pytest.fixture(scope="session")
def calculator():
    """sevenn's own calculator on the first ensemble member."""
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator(ENSEMBLE[0], device="cpu")


@pytest.fixture(scope="session")
def ethanol():
    """``ethanol(n, start)``: labelled configurations of the shared test set."""
    return _ethanol
