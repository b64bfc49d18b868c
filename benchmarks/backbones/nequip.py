"""Train the NequIP backbones the benchmarks probe, the way users train NequIP.

``nequip-train`` (Hydra config, written per dataset and seed into the work folder) with a
``NequIPGNNModel``: 3 convnet layers, r_max 5, per-type energy shifts = the isolated-atom
energies, EMA, energy+force loss (per-atom energies), Adam with ReduceLROnPlateau; then
``nequip-package build`` on the best checkpoint. The expressiveness axis (``--size``):
small = 32 features (0.22 M parameters); large = 64 features (1.44 M), both l_max 1. Training is capped by epochs and
wall time (``--max-minutes``; <= ~8 min a model on ONE CPU thread). Seeds differ in
initialisation and in the train/validation split. ``--device cuda --parallel 8`` trains on a
GPU, several models at once.

    ethanol: ../shared/data/ethanol/train.xyz (900 train / 100 valid), held out: test_MD.xyz
    3bpa:    ../shared/data/3bpa/train_300K.xyz (450 / 50), held out: train_mixedT.xyz
             configurations that are not in train_300K.xyz

Models go to ``benchmarks/cache/nequip/<dataset>[-large]/seed<k>.nequip.zip``; held-out
errors of every model to ``benchmarks/cache/nequip/metrics.json``. An interrupted training
resumes from its ``last.ckpt``.

    python -m benchmarks train nequip                      # everything, seeds 1..4
    python -m benchmarks train nequip --datasets ethanol --seeds 1 2
    python -m benchmarks train nequip --size large --device cuda --parallel 8 --no-evaluate
    python -m benchmarks train nequip --evaluate-only      # metrics of existing models
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.backbones import console_program, evaluate_adapter, seed_model_path

MODEL_SUFFIX = ".nequip.zip"

DATASETS = {
    "ethanol": {
        "train": "ethanol/train.xyz",
        "isolated": "ethanol/isolated_atoms.xyz",
        "split": (900, 100),
        "max_epochs": 40,
    },
    "3bpa": {"train": "3bpa/train_300K.xyz", "isolated": "3bpa/iso_atoms.xyz", "split": (450, 50), "max_epochs": 40},
}
MODEL = {"num_layers": 3, "r_max": 5.0, "radial_mlp_depth": 2, "radial_mlp_width": 64, "num_bessels": 8}
SIZES = {"small": {"num_features": 32, "l_max": 1}, "large": {"num_features": 64, "l_max": 1}}

CONFIG = """\
run: [train]
cutoff_radius: {r_max}
chemical_symbols: {symbols}
model_type_names: ${{chemical_symbols}}
monitored_metric: val0_epoch/weighted_sum

data:
  _target_: nequip.data.datamodule.ASEDataModule
  seed: {seed}
  split_dataset:
    file_path: {train_file}
    train: {n_train}
    val: {n_val}
  transforms:
    - _target_: nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper
      model_type_names: ${{model_type_names}}
      chemical_species_to_atom_type_map: ${{list_to_identity_dict:${{chemical_symbols}}}}
    - _target_: nequip.data.transforms.NeighborListTransform
      r_max: ${{cutoff_radius}}
  train_dataloader:
    _target_: torch.utils.data.DataLoader
    batch_size: 5
    shuffle: true
  val_dataloader:
    _target_: torch.utils.data.DataLoader
    batch_size: 20
  stats_manager:
    _target_: nequip.data.CommonDataStatisticsManager
    type_names: ${{model_type_names}}

trainer:
  _target_: lightning.Trainer
  accelerator: {accelerator}
  max_epochs: {max_epochs}
  max_time: "{max_time}"
  enable_progress_bar: false
  logger: false
  callbacks:
    - _target_: lightning.pytorch.callbacks.ModelCheckpoint
      monitor: ${{monitored_metric}}
      dirpath: ${{hydra:runtime.output_dir}}
      filename: best
      save_last: true

training_module:
  _target_: nequip.train.EMALightningModule
  ema_decay: 0.99
  loss:
    _target_: nequip.train.EnergyForceLoss
    per_atom_energy: true
    coeffs: {{total_energy: 1.0, forces: 1.0}}
  val_metrics:
    _target_: nequip.train.EnergyForceMetrics
    coeffs: {{total_energy_mae: 1.0, forces_mae: 1.0}}
  optimizer:
    _target_: torch.optim.Adam
    lr: 0.01
  lr_scheduler:
    scheduler:
      _target_: torch.optim.lr_scheduler.ReduceLROnPlateau
      factor: 0.6
      patience: 3
      threshold: 0.05
      min_lr: 1.0e-5
    monitor: ${{monitored_metric}}
    interval: epoch
    frequency: 1
  model:
    _target_: nequip.model.NequIPGNNModel
    seed: {seed}
    model_dtype: float32
    type_names: ${{model_type_names}}
    r_max: ${{cutoff_radius}}
    num_bessels: {num_bessels}
    num_layers: {num_layers}
    l_max: {l_max}
    parity: true
    num_features: {num_features}
    radial_mlp_depth: {radial_mlp_depth}
    radial_mlp_width: {radial_mlp_width}
    avg_num_neighbors: ${{training_data_stats:num_neighbors_mean}}
    per_type_energy_scales: ${{training_data_stats:forces_rms}}
    per_type_energy_shifts: {shifts}

global_options:
  allow_tf32: false
"""

log = logging.getLogger("benchmarks.backbones")


def isolated_energies(path: Path, train_file: Path) -> dict[str, float]:
    """Isolated-atom energies of the elements present in ``train_file`` (by symbol)."""
    from ase.io import read

    present = {s for atoms in read(train_file, ":") for s in atoms.get_chemical_symbols()}
    e0s = {a.get_chemical_symbols()[0]: float(a.get_potential_energy()) for a in read(path, ":")}
    missing = present - set(e0s)
    if missing:
        raise SystemExit(f"{path}: no isolated-atom energy for {sorted(missing)}")
    return {s: e0s[s] for s in sorted(present)}


def write_config(
    name: str,
    seed: int,
    work: Path,
    data: Path,
    max_epochs: int,
    max_minutes: float,
    size: str = "small",
    device: str = "cpu",
) -> Path:
    spec = DATASETS[name]
    train_file = (data / spec["train"]).resolve()
    shifts = isolated_energies(data / spec["isolated"], train_file)
    minutes = int(max_minutes)
    seconds = int(round((max_minutes - minutes) * 60))
    text = CONFIG.format(
        seed=seed,
        train_file=train_file,
        n_train=spec["split"][0],
        n_val=spec["split"][1],
        symbols="[" + ", ".join(shifts) + "]",
        max_epochs=max_epochs,
        max_time=f"00:00:{minutes:02d}:{seconds:02d}",
        accelerator="gpu" if device == "cuda" else device,
        shifts="{" + ", ".join(f"{s}: {e!r}" for s, e in shifts.items()) + "}",
        **MODEL,
        **SIZES[size],
    )
    path = work / "config.yaml"
    path.write_text(text)
    return path


def train_one(name: str, seed: int, args) -> Path | None:
    target = seed_model_path("nequip", name, seed, args.size, args.cache)
    if target.exists():
        log.info("%s seed %d: %s exists, skipping", name, seed, target)
        return target
    work = (target.parent / "work" / f"seed{seed}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    max_epochs = args.epochs or DATASETS[name]["max_epochs"]
    write_config(name, seed, work, args.data, max_epochs, args.max_minutes, args.size, args.device)
    run_dir = work / "run"
    cmd = [
        *console_program("nequip-train", "nequip.scripts.train"),
        "-cp",
        str(work),
        "-cn",
        "config",
        f"hydra.run.dir={run_dir}",
    ]
    if (run_dir / "last.ckpt").exists():  # resume an interrupted training
        cmd.append(f"++ckpt_path={run_dir / 'last.ckpt'}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    log.info(
        "%s seed %d: nequip-train (<= %d epochs, <= %.1f min) in %s", name, seed, max_epochs, args.max_minutes, work
    )
    started = time.time()
    with open(work / "nequip-train.out", "a") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)
    best = run_dir / "best.ckpt"
    if rc != 0 or not best.exists():
        log.error(
            "%s seed %d: nequip-train failed (rc %d) after %.1f min; see %s",
            name,
            seed,
            rc,
            (time.time() - started) / 60,
            work / "nequip-train.out",
        )
        return None
    packaged = work / f"seed{seed}.nequip.zip"
    with open(work / "nequip-package.out", "w") as out:
        rc = subprocess.call(
            [*console_program("nequip-package", "nequip.scripts.package"), "build", str(best), str(packaged)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )
    if rc != 0 or not packaged.exists():
        log.error("%s seed %d: nequip-package failed (rc %d); see %s", name, seed, rc, work / "nequip-package.out")
        return None
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(packaged, partial)
    os.replace(partial, target)  # atomic: a model in the cache is always complete
    epochs = _epochs_done(run_dir)
    log.info("%s seed %d: done in %.1f min (%s epochs) -> %s", name, seed, (time.time() - started) / 60, epochs, target)
    return target


def _epochs_done(run_dir: Path):
    import torch

    try:
        return torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] + 1
    except Exception:  # noqa: BLE001 - informative only
        return "?"


def evaluate(model_path: Path, structures, batch: int = 32) -> dict:
    from probe_nequip import NequIPAdapter

    adapter = NequIPAdapter([model_path])
    return {
        **evaluate_adapter(adapter, structures, batch),
        "n_parameters": int(sum(p.numel() for p in adapter.models[0].parameters())),
    }


def add_arguments(parser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--max-minutes", type=float, default=7.0, help="wall-time cap of one training (Lightning max_time)"
    )
