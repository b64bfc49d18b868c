"""GFN2-xTB (tblite) as the OOD benchmark runs it: the calculator, the spin multiplicity of
a neutral structure, single-point labels of a list of frames, Langevin MD and BFGS
relaxation. Nothing here knows which set it labels."""

from __future__ import annotations

import sys

import numpy as np


def xtb_calculator(multiplicity: int = 1, charge: int = 0):
    """A GFN2-xTB calculator (tblite), quiet."""
    try:
        from tblite.ase import TBLite
    except ImportError as error:
        raise SystemExit(
            f"tblite is missing ({error}): `{sys.executable} -m pip install tblite` (GFN2-xTB labels need it)"
        ) from error
    return TBLite(method="GFN2-xTB", charge=charge, multiplicity=multiplicity, verbosity=0)


def multiplicity_of(atoms) -> int:
    """Lowest spin multiplicity of a neutral structure: doublet for an odd electron count
    (radical fragments), singlet otherwise; ``info['multiplicity']`` overrides."""
    if "multiplicity" in atoms.info:
        return int(atoms.info["multiplicity"])
    return 2 if int(atoms.numbers.sum()) % 2 else 1


def label(frames, desc: str):
    """xTB energy and forces of each frame, as a SinglePointCalculator (what ase writes as
    ``energy=`` and the ``forces`` column). Returns (labelled, number that failed)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from tqdm import tqdm

    labelled, failed = [], 0
    for atoms in tqdm(frames, desc=f"xTB {desc}", unit="structure", disable=None):
        clean = Atoms(numbers=atoms.numbers, positions=atoms.positions)
        clean.info.update({k: v for k, v in atoms.info.items() if k not in ("energy", "forces")})
        clean.info["multiplicity"] = multiplicity_of(atoms)
        clean.calc = xtb_calculator(clean.info["multiplicity"])
        try:
            energy, forces = clean.get_potential_energy(), clean.get_forces()
        except Exception:  # noqa: BLE001 - SCF not converged (ase CalculationFailed): dropped
            failed += 1
            continue
        if not (np.isfinite(energy) and np.isfinite(forces).all()):
            failed += 1
            continue
        clean.calc = SinglePointCalculator(clean, energy=float(energy), forces=forces)
        labelled.append(clean)
    return labelled, failed


def xtb_md(atoms, temperature_K, n_frames, spacing, warmup, rng, timestep_fs=0.5, friction_per_fs=0.02):
    """Langevin MD with the xTB calculator; a frame every ``spacing`` steps after ``warmup``
    steps. Stops early (keeping the frames so far) if xTB fails."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = atoms.copy()
    atoms.calc = xtb_calculator(multiplicity_of(atoms))
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    dynamics = Langevin(
        atoms,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        rng=rng,
    )
    frames = []
    try:
        dynamics.run(warmup)
        for _ in range(n_frames):
            dynamics.run(spacing)
            frame = atoms.copy()
            frame.calc = None
            frame.info = {"md_temperature_K": float(temperature_K), "md_time_fs": float(dynamics.nsteps * timestep_fs)}
            frames.append(frame)
    except Exception as error:  # noqa: BLE001 - xTB failed mid-trajectory: keep what we have
        print(f"MD at {temperature_K} K stopped after {len(frames)} frames: {error}", flush=True)
    return frames


def relaxed(atoms, fmax=0.05, steps=200):
    from ase.optimize import BFGS

    atoms = atoms.copy()
    atoms.calc = xtb_calculator(multiplicity_of(atoms))
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    atoms.calc = None
    return atoms
