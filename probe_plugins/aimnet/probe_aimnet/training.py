"""Train and export small AIMNet2 models with aimnet's own tools, from ASE structures.

The chain an AIMNet2 user runs, offline and on CPU:

1. ``write_dataset``: labelled ``ase.Atoms`` -> aimnet's HDF5 layout (one group per
   atom count, ``coord``/``numbers``/``charge``/``energy``/``forces``).
2. ``fit_sae``: self-atomic energies by linear regression (what ``aimnet calc_sae`` does).
3. ``train``: ``aimnet train`` (the click command, in process, so that the seed can be set)
   with ``wandb: null``; needs ``omegaconf`` and ``pytorch-ignite`` (extra ``train``).
4. ``export``: ``aimnet export`` -> a self-contained v2 ``.pt`` (SAE baked into the float64
   atomic shifts, long-range Coulomb moved out to the calculator).

``small_model_config`` is the bundled ``aimnet2.yaml`` with smaller widths.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import yaml


def default_model_yaml() -> Path:
    import aimnet

    return Path(aimnet.__file__).parent / "models" / "aimnet2.yaml"


def small_model_config(
    nfeature=8, nshifts=16, ncomb_v=12, hidden=(128, 96), aim_size=128, out_hidden=(64, 64), cutoff=5.0
) -> dict:
    """The bundled AIMNet2 architecture (3 passes, charges, long-range Coulomb) with
    smaller widths. ``hidden``: the MLP widths of each pass."""
    cfg = yaml.safe_load(default_model_yaml().read_text())
    kwargs = cfg["kwargs"]
    kwargs["nfeature"] = int(nfeature)
    kwargs["ncomb_v"] = int(ncomb_v)
    kwargs["aev"] = {"rc_s": float(cutoff), "nshifts_s": int(nshifts)}
    hidden = [int(h) for h in hidden]
    kwargs["hidden"] = [list(hidden), list(hidden), list(hidden) + [hidden[-1]]]
    kwargs["aim_size"] = int(aim_size)
    energy = kwargs["outputs"]["energy_mlp"]["kwargs"]
    energy["n_in"] = int(aim_size)
    energy["mlp"]["hidden"] = [int(h) for h in out_hidden]
    return cfg


def write_dataset(frames, path: Path, energy_key: str | None = None, forces_key: str | None = None) -> Path:
    """Labelled structures -> aimnet's HDF5 layout. Labels: ASE calculator results, or
    ``atoms.info[energy_key]`` / ``atoms.arrays[forces_key]``."""
    import h5py

    groups: dict[int, dict[str, list]] = {}
    for atoms in frames:
        energy = atoms.info[energy_key] if energy_key else atoms.get_potential_energy()
        forces = atoms.arrays[forces_key] if forces_key else atoms.get_forces()
        group = groups.setdefault(len(atoms), {k: [] for k in ("coord", "numbers", "charge", "energy", "forces")})
        group["coord"].append(atoms.get_positions())
        group["numbers"].append(atoms.numbers)
        group["charge"].append(float(atoms.info.get("charge", 0.0)))
        group["energy"].append(float(energy))
        group["forces"].append(np.asarray(forces))
    dtypes = {
        "coord": np.float32,
        "numbers": np.int64,
        "charge": np.float32,
        "energy": np.float64,
        "forces": np.float32,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        for n_atoms, group in sorted(groups.items()):
            h5 = handle.create_group(f"{n_atoms:03d}")
            for key, values in group.items():
                h5.create_dataset(key, data=np.asarray(values, dtype=dtypes[key]))
    return path


def fit_sae(dataset: Path, path: Path) -> dict[int, float]:
    """Self-atomic energies by least squares over the dataset (aimnet's linreg SAE)."""
    from aimnet.data import SizeGroupedDataset

    ds = SizeGroupedDataset(str(dataset), keys=["numbers", "energy"])
    sae = {int(z): float(e) for z, e in ds.apply_peratom_shift("energy", "_energy").items()}
    Path(path).write_text("".join(f"{z}: {e!r}\n" for z, e in sorted(sae.items())))
    return sae


def train_config(
    train_h5: Path,
    val_h5: Path,
    sae: Path,
    workdir: Path,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    forces_weight: float = 0.2,
) -> dict:
    """Overrides of aimnet's default_train.yaml: our files, no charges target, no wandb."""
    return {
        "run_name": "probe",
        "data": {
            "train": str(train_h5),
            "val": str(val_h5),
            "sae": {"energy": {"file": str(sae), "mode": "linreg"}},
            "y": ["energy", "forces"],
            "samplers": {
                "train": {"kwargs": {"batch_size": batch_size, "batches_per_epoch": -1}},
                "val": {"kwargs": {"batch_size": 100}},
            },
            "loaders": {"train": {"pin_memory": False}, "val": {"pin_memory": False}},
        },
        "loss": {
            "kwargs": {
                "components": {
                    "energy": {"fn": "aimnet.train.loss.energy_loss_fn", "weight": 1.0},
                    "forces": {
                        "fn": "aimnet.train.loss.peratom_loss_fn",
                        "weight": forces_weight,
                        "kwargs": {"key_true": "forces", "key_pred": "forces"},
                    },
                }
            }
        },
        "optimizer": {"kwargs": {"lr": lr}},
        "scheduler": {"kwargs": {"patience": 3}},
        "trainer": {"epochs": int(epochs)},
        "checkpoint": {"dirname": str(Path(workdir) / "checkpoints")},
        "wandb": None,
    }


def train(
    model_cfg: dict, overrides: dict, weights: Path, seed: int, workdir: Path, max_seconds: float | None = None
) -> Path:
    """``aimnet train --model model.yaml --config train.yaml --save weights`` in process,
    after seeding torch and numpy (aimnet's CLI has no seed option). ``max_seconds``:
    stop after the epoch that crosses this wall time (the weights of that epoch are saved)."""
    import time

    import torch
    from aimnet.train import train as train_module
    from aimnet.train.train import _default_config
    from aimnet.train.train import train as aimnet_train
    from omegaconf import OmegaConf

    # a merge would keep the default `charges` loss term: start from no terms
    default_cfg = OmegaConf.load(_default_config)
    default_cfg.loss.kwargs.components = {}
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model_yaml = workdir / "model.yaml"
    model_yaml.write_text(yaml.safe_dump(model_cfg, sort_keys=False))
    merged = OmegaConf.merge(default_cfg, OmegaConf.create(overrides))
    train_yaml = workdir / "train.yaml"
    train_yaml.write_text(OmegaConf.to_yaml(merged))
    torch.manual_seed(seed)
    np.random.seed(seed)
    original = train_module.utils.build_engine

    def build_engine(*args, **kwargs):
        trainer, validator = original(*args, **kwargs)
        if max_seconds is not None:
            from ignite.engine import Events

            started = time.monotonic()

            @trainer.on(Events.EPOCH_COMPLETED)
            def _stop_on_wall_time(engine):
                if time.monotonic() - started > max_seconds:
                    engine.terminate()

        return trainer, validator

    train_module.utils.build_engine = build_engine
    try:
        aimnet_train.callback((str(train_yaml),), str(model_yaml), None, str(weights), (), True)
    finally:
        train_module.utils.build_engine = original
    return Path(weights)


def export(weights: Path, model_cfg: dict | Path, sae: Path, output: Path, workdir: Path) -> Path:
    """``aimnet export weights.pt output.pt --model model.yaml --sae sae.yaml``."""
    from aimnet.train.export_model import export_model

    if isinstance(model_cfg, dict):
        path = Path(workdir) / "model.yaml"
        path.write_text(yaml.safe_dump(model_cfg, sort_keys=False))
        model_cfg = path
    partial = Path(output).with_name(Path(output).name + ".partial")
    export_model.callback(str(weights), str(partial), str(model_cfg), str(sae), None, None, ())
    os.replace(partial, output)
    return Path(output)


def random_model(model_cfg: dict, sae: dict[int, float], output: Path, seed: int, workdir: Path) -> Path:
    """An untrained model exported like a trained one (for tests and smoke runs)."""
    import torch
    from aimnet.config import build_module

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_module(copy.deepcopy(model_cfg))
    weights = workdir / f"weights_{seed}.pt"
    torch.save(model.state_dict(), weights)
    sae_file = workdir / "sae.yaml"
    sae_file.write_text("".join(f"{z}: {e!r}\n" for z, e in sorted(sae.items())))
    return export(weights, model_cfg, sae_file, output, workdir)


def train_from_frames(
    train_frames,
    valid_frames,
    output: Path,
    seed: int,
    epochs: int,
    workdir: Path,
    model_cfg: dict | None = None,
    max_seconds=None,
    **train_kwargs,
) -> Path:
    """The whole chain: dataset files, SAE, ``aimnet train``, ``aimnet export``."""
    workdir = Path(workdir)
    model_cfg = model_cfg or small_model_config()
    train_h5 = write_dataset(train_frames, workdir / "train.h5")
    val_h5 = write_dataset(valid_frames, workdir / "val.h5")
    sae = workdir / "sae.yaml"
    fit_sae(train_h5, sae)
    weights = workdir / "weights.pt"
    train(
        model_cfg,
        train_config(train_h5, val_h5, sae, workdir, epochs, **train_kwargs),
        weights,
        seed,
        workdir,
        max_seconds,
    )
    return export(weights, model_cfg, sae, output, workdir)
