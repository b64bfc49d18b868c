"""What ``step-cost`` (and ``scaling``) time: the backbones importable here, the model of
each (the suite's seed 1, else one trained briefly), its plain and probed ASE calculators,
and the replicated-ethanol structures."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from benchmarks.backbones import seed_model_path
from benchmarks.common import CACHE, ETHANOL_HELDOUT

TIMING = CACHE / "timing"  # models trained briefly when the suite's are not cached
BACKBONES = ("mace", "sevenn", "nequip", "aimnet")
SHORT_TRAINING = {
    "mace": ["--epochs", "2"],
    "nequip": ["--epochs", "1", "--max-minutes", "5"],
    "aimnet": ["--epochs", "1"],
}


def importable(backbone) -> bool:
    from importlib.util import find_spec

    return (
        find_spec(f"probe_{backbone}") is not None
        and find_spec({"mace": "mace", "sevenn": "sevenn", "nequip": "nequip", "aimnet": "aimnet"}[backbone])
        is not None
    )


def timing_model(backbone) -> str:
    """The suite's seed-1 model if cached, else one of the same architecture trained briefly."""
    if backbone == "sevenn":
        return "7net-0"
    suite = seed_model_path(backbone, "ethanol", 1)
    if suite.exists():
        return str(suite)
    short = seed_model_path(backbone, "ethanol", 1, cache=TIMING / backbone)
    if not short.exists():
        cmd = [
            sys.executable,
            "-m",
            "benchmarks",
            "train",
            backbone,
            "--datasets",
            "ethanol",
            "--seeds",
            "1",
            "--no-evaluate",
            "--cache",
            str(TIMING / backbone),
            *SHORT_TRAINING[backbone],
        ]
        print("training a timing model:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return str(short)


def calculators(backbone, model, probe):
    """(plain, probed) ASE calculators on the same model file."""
    if backbone == "mace":
        from mace.calculators import MACECalculator as Plain
        from probe_mace import MACECalculator

        dtype = "float64" if "float64" in str(_mace_dtype(model)) else "float32"
        options = dict(model_paths=[model], device="cpu", default_dtype=dtype)
        return Plain(**options), MACECalculator(**options, probe=probe, probe_policy="ignore")
    if backbone == "sevenn":
        from probe_sevenn import SevenNetCalculator
        from sevenn.calculator import SevenNetCalculator as Plain

        return Plain(model, device="cpu"), SevenNetCalculator(model, device="cpu", probe=probe, probe_policy="ignore")
    if backbone == "nequip":
        from probe_nequip import NequIPCalculator

        return (
            NequIPCalculator.from_saved_model(model, device="cpu"),
            NequIPCalculator.from_saved_model(model, device="cpu", probe=probe, probe_policy="ignore"),
        )
    from probe_aimnet import AIMNet2ASE

    return AIMNet2ASE(model), AIMNet2ASE(model, probe=probe, probe_policy="ignore")


def _mace_dtype(model):
    import torch

    return {p.dtype for p in torch.load(model, map_location="cpu", weights_only=False).parameters()}


def replicated_ethanol(n_molecules, spacing=6.0):
    """``n_molecules`` ethanol molecules on a cubic grid (no periodic cell)."""
    import ase.io
    from ase import Atoms

    molecule = ase.io.read(ETHANOL_HELDOUT, 0)
    side = int(np.ceil(n_molecules ** (1 / 3)))
    shifts = [spacing * np.array([k % side, (k // side) % side, k // side**2]) for k in range(n_molecules)]
    centred = molecule.positions - molecule.positions.mean(0)
    return Atoms(
        numbers=np.tile(molecule.numbers, n_molecules), positions=np.concatenate([centred + s for s in shifts])
    )
