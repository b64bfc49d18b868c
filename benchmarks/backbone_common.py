"""What every ``benchmarks/<backbone>_backbones.py`` shares: where the models of a size
live, the held-out DFT sets, the held-out errors of one trained model, the metrics file next
to the cached models, and how trainings run (a framework's console script, several at once)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def model_dir(cache: Path, name: str, size: str = "small") -> Path:
    """cache/<dataset> for the small models (the default), cache/<dataset>-<size> otherwise."""
    return cache / (name if size == "small" else f"{name}-{size}")


def console_program(script: str, module: str) -> list[str]:
    """The console script next to this Python, or its module (a --target install has no
    scripts on PATH)."""
    path = Path(sys.executable).with_name(script)
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def train_in_parallel(train, jobs, parallel: int) -> None:
    """``train(job)`` for every job, ``parallel`` at a time (each starts its own process)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(train, jobs))


def held_out(name: str, data: Path):
    """ethanol: test_MD.xyz; 3bpa: train_mixedT configurations not in train_300K."""
    from ase.io import read

    if name == "ethanol":
        return read(data / "ethanol/test_MD.xyz", ":")
    seen = {_key(a) for a in read(data / "3bpa/train_300K.xyz", ":")}
    return [a for a in read(data / "3bpa/train_mixedT.xyz", ":") if _key(a) not in seen]


def _key(atoms) -> bytes:
    return atoms.numbers.tobytes() + np.round(atoms.positions, 5).tobytes()


def evaluate_adapter(adapter, structures, batch: int = 32) -> dict:
    """Energy and force errors of the adapter's first model on labelled structures."""
    energies, forces = [], []
    for start in range(0, len(structures), batch):
        out = adapter.run(structures[start:start + batch], compute_forces=True, members=False)
        energies.append(out.energies)
        forces.extend(out.forces)
    pred_e = np.concatenate(energies)
    ref_e = np.array([a.get_potential_energy() for a in structures])
    n_atoms = np.array([len(a) for a in structures])
    err = pred_e - ref_e
    f_err = np.concatenate([(f - a.get_forces()).ravel() for f, a in zip(forces, structures)])
    return {
        "n_structures": len(structures),
        "energy_mae_meV": float(np.mean(np.abs(err)) * 1e3),
        "energy_mean_signed_error_meV": float(np.mean(err) * 1e3),
        "energy_mae_meV_per_atom": float(np.mean(np.abs(err) / n_atoms) * 1e3),
        "energy_rmse_meV": float(np.sqrt(np.mean(err**2)) * 1e3),
        "forces_mae_meV_per_A": float(np.mean(np.abs(f_err)) * 1e3),
        "forces_rmse_meV_per_A": float(np.sqrt(np.mean(f_err**2)) * 1e3),
    }


def update_metrics(cache: Path, name: str, seed: int, metrics: dict) -> None:
    """Merge one model's metrics into ``cache/metrics.json`` (atomic)."""
    path = cache / "metrics.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    table.setdefault(name, {})[f"seed{seed}"] = metrics
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(table, indent=2, sort_keys=True))
    os.replace(partial, path)
