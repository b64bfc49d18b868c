"""Fixtures: a tiny NequIP model trained here with ``nequip-train`` (2 epochs on 40
ethanol configurations of the shared rMD17 set, one CPU thread; its config also enables
``probe_nequip.ProbeCallback`` on a 40-structure test set, so the YAML switch runs in a
real ``nequip-train``), packaged with nequip-package's ``build``. The ensemble is the
package and the first-epoch snapshot checkpoint of the same run (another backbone, and
the other file format). One nequip-train process: starting one costs more than training."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from probe_base.testing import skip_outside_ci

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*LeafSpec.*")

DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "ethanol"
BIN = Path(sys.executable).parent
ISOLATED = {"C": -1025.2770951782686, "H": -13.568422383046626, "O": -2035.5709809589698}

CONFIG = """\
run: [train, test]
cutoff_radius: 4.0
chemical_symbols: [C, H, O]
model_type_names: ${{chemical_symbols}}
data:
  _target_: nequip.data.datamodule.ASEDataModule
  seed: {seed}
  split_dataset:
    file_path: {train}
    train: 40
    val: 8
  test_file_path: {test}
  transforms:
    - _target_: nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper
      model_type_names: ${{model_type_names}}
      chemical_species_to_atom_type_map: ${{list_to_identity_dict:${{chemical_symbols}}}}
    - _target_: nequip.data.transforms.NeighborListTransform
      r_max: ${{cutoff_radius}}
  train_dataloader: {{_target_: torch.utils.data.DataLoader, batch_size: 4, shuffle: true}}
  val_dataloader: {{_target_: torch.utils.data.DataLoader, batch_size: 8}}
  test_dataloader: {{_target_: torch.utils.data.DataLoader, batch_size: 7}}
  stats_manager:
    _target_: nequip.data.CommonDataStatisticsManager
    type_names: ${{model_type_names}}
trainer:
  _target_: lightning.Trainer
  accelerator: cpu
  max_epochs: 2
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  callbacks:
    - _target_: lightning.pytorch.callbacks.ModelCheckpoint  # every epoch; the last is "best"
      dirpath: ${{hydra:runtime.output_dir}}
      filename: "snapshot{{epoch}}"
      auto_insert_metric_name: false
      save_top_k: -1
      every_n_epochs: 1
    - _target_: probe_nequip.ProbeCallback
      out_dir: ${{hydra:runtime.output_dir}}/probe
      classifier: {{hidden: 8, heads: 2, max_epochs: 20, cv_folds: 2}}
      n_bootstrap: 20
      quantile: 0.5  # a 2-epoch backbone: no structure is within chemical accuracy
      false_alarm: 0.25  # 20 fitting structures: a rate their calibration half can state
      calibration_fraction: 0.5
      alpha: 0.1
training_module:
  _target_: nequip.train.EMALightningModule
  ema_decay: 0.9
  loss:
    _target_: nequip.train.EnergyForceLoss
    per_atom_energy: true
    coeffs: {{total_energy: 1.0, forces: 1.0}}
  val_metrics:
    _target_: nequip.train.EnergyForceMetrics
    coeffs: {{total_energy_mae: 1.0, forces_mae: 1.0}}
  test_metrics: ${{training_module.val_metrics}}
  optimizer: {{_target_: torch.optim.Adam, lr: 0.01}}
  model:
    _target_: nequip.model.NequIPGNNModel
    seed: {seed}
    model_dtype: float32
    type_names: ${{model_type_names}}
    r_max: ${{cutoff_radius}}
    num_bessels: 4
    num_layers: 3
    l_max: 1
    num_features: [6, 4]
    radial_mlp_depth: 1
    radial_mlp_width: 8
    avg_num_neighbors: ${{training_data_stats:num_neighbors_mean}}
    per_type_energy_scales: ${{training_data_stats:forces_rms}}
    per_type_energy_shifts: {shifts}
"""


def _ethanol(path: Path, index: str):
    import ase.io

    if not path.exists():
        skip_outside_ci(
            f"{path} not found (the shared data set, ../shared/data next to the repository)",
            "CI must provide the shared data set there",
        )
    return ase.io.read(path, index)


def _run(cmd, cwd: Path, log: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log, "w") as out:
        rc = subprocess.call([str(c) for c in cmd], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        raise RuntimeError(f"{cmd[0]} failed (rc {rc}):\n{log.read_text()[-4000:]}")


def train_tiny(folder: Path, seed: int, data: dict) -> Path:
    """``nequip-train`` on the tiny config; returns its run folder."""
    work = folder / f"seed{seed}"
    work.mkdir()
    shifts = "{" + ", ".join(f"{k}: {v!r}" for k, v in ISOLATED.items()) + "}"
    (work / "config.yaml").write_text(CONFIG.format(seed=seed, train=data["train"], test=data["test"], shifts=shifts))
    _run(
        [BIN / "nequip-train", "-cp", work, "-cn", "config", f"hydra.run.dir={work / 'run'}"], work, work / "train.log"
    )
    return work / "run"


def package(checkpoint: Path, output: Path) -> Path:
    """``nequip-package build`` (its main, in this process: no second interpreter start),
    leaving torch's default dtype, the random generators and nequip's state as they were."""
    import random

    from nequip.scripts.package import main
    from nequip.utils import global_state

    saved = (
        torch.get_default_dtype(),
        torch.get_rng_state(),
        np.random.get_state(),
        random.getstate(),
        global_state._GLOBAL_STATE_INITIALIZED,
    )
    try:
        main(["build", str(checkpoint), str(output)])
    finally:
        torch.set_default_dtype(saved[0])
        torch.set_rng_state(saved[1]), np.random.set_state(saved[2]), random.setstate(saved[3])
        global_state._GLOBAL_STATE_INITIALIZED = saved[4]
    return output


@pytest.fixture(scope="session")
def data_files(tmp_path_factory):
    import ase.io

    folder = tmp_path_factory.mktemp("ethanol")
    files = {"train": folder / "train.xyz", "test": folder / "test.xyz"}
    ase.io.write(files["train"], _ethanol(DATA / "train.xyz", ":48"))  # 40 train / 8 val
    ase.io.write(files["test"], _ethanol(DATA / "test_MD.xyz", "100:140"))
    return files


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_files):
    """The run folder, its final checkpoint and package, and the first-epoch snapshot."""
    folder = tmp_path_factory.mktemp("nequip_models")
    run = train_tiny(folder, 1, data_files)
    return {
        "run1": run,
        "ckpt1": run / "snapshot1.ckpt",
        "ckpt2": run / "snapshot0.ckpt",
        "package": package(run / "snapshot1.ckpt", folder / "seed1.nequip.zip"),
    }


@pytest.fixture(scope="session")
def model_paths(trained):
    """An ensemble: the package of the trained model and the checkpoint of its first epoch."""
    return [trained["package"], trained["ckpt2"]]


@pytest.fixture(scope="session")
def structures():
    """Four ethanols of the shared test set and a water molecule (two sizes in a batch)."""
    from ase.build import molecule

    water = molecule("H2O")
    water.positions += np.random.default_rng(0).normal(scale=0.03, size=water.positions.shape)
    return list(_ethanol(DATA / "test_MD.xyz", ":4")) + [water]


@pytest.fixture(scope="session")
def ethanol():
    """``ethanol(n, start)``: labelled configurations of the shared test set."""
    return lambda n, start=0: _ethanol(DATA / "test_MD.xyz", f"{start}:{start + n}")


@pytest.fixture(scope="session")
def adapter(model_paths):
    from probe_nequip import NequIPAdapter

    return NequIPAdapter(model_paths)
