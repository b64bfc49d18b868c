"""Train the MACE backbones the benchmarks probe, the way users train MACE.

``mace_run_train`` with ScaleShiftMACE, 32 channels, max_L 0, 2 interactions, r_max 5,
E0s from the isolated-atom file, EMA, and a stage-two (SWA) phase with a higher energy
weight so that energies converge, not only forces. Models already in the cache are
skipped; an interrupted run resumes from mace's latest checkpoint.

    ethanol: ../shared/data/ethanol/train.xyz (900 train / 100 valid), held out: test_MD.xyz
    3bpa:    ../shared/data/3bpa/train_300K.xyz (450 / 50), held out: train_mixedT.xyz
             configurations that are not in train_300K.xyz

Models go to ``benchmarks/cache/mace/<dataset>[-large]/seed<k>.model``; held-out errors of
every model to ``benchmarks/cache/mace/metrics.json`` (the driver: ``benchmarks.backbones``).
On 2 CPU cores keep ``--parallel`` at 1 or 2.

    python -m benchmarks train mace                      # everything, seeds 1..4
    python -m benchmarks train mace --datasets ethanol --seeds 1 2
    python -m benchmarks train mace --evaluate-only      # metrics of existing models
    python -m benchmarks train mace --size large --device cuda --parallel 4   # on a GPU
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.backbones import console_program, evaluate_adapter, model_dir, seed_model_path

MODEL_SUFFIX = ".model"
SEED_MAJOR = True  # every dataset gets a first model early

# epochs chosen so that one model takes <= ~8 min on ONE CPU thread (float32)
DATASETS = {
    "ethanol": {
        "train": "ethanol/train.xyz",
        "isolated": "ethanol/isolated_atoms.xyz",
        "valid_fraction": 0.1,  # 900 / 100
        "epochs": 20,
        "start_swa": 14,
    },
    "3bpa": {
        "train": "3bpa/train_300K.xyz",
        "isolated": "3bpa/iso_atoms.xyz",
        "valid_fraction": 0.1,  # 450 / 50
        "epochs": 13,
        "start_swa": 9,
    },
}

# the expressiveness axis: feature width and equivariant order of the messages
SIZES = {
    "small": {"num_channels": 32, "max_L": 0},
    "large": {"num_channels": 64, "max_L": 1},
}

log = logging.getLogger("benchmarks.backbones")


def e0s_of(path: Path, train_file: Path) -> dict[int, float]:
    """Isolated-atom energies of the elements in ``train_file`` (mace refuses E0s of
    elements that are not in the training data)."""
    from ase.io import read

    present = {int(z) for atoms in read(train_file, ":") for z in atoms.numbers}
    e0s = {int(a.numbers[0]): float(a.get_potential_energy()) for a in read(path, ":")}
    missing = present - set(e0s)
    if missing:
        raise SystemExit(f"{path}: no isolated-atom energy for Z={sorted(missing)}")
    return {z: e0s[z] for z in sorted(present)}


def train_command(
    name: str,
    spec: dict,
    seed: int,
    work: Path,
    data: Path,
    dtype: str,
    epochs: int,
    start_swa: int,
    size: str = "small",
    device: str = "cpu",
) -> list[str]:
    program = console_program("mace_run_train", "mace.cli.run_train")
    e0s = e0s_of(data / spec["isolated"], data / spec["train"])
    return [
        *program,
        f"--name=seed{seed}",
        f"--seed={seed}",
        f"--train_file={data / spec['train']}",
        f"--valid_fraction={spec['valid_fraction']}",
        "--energy_key=energy",  # mace reads ASE's SinglePointCalculator for these keys
        "--forces_key=forces",
        f"--E0s={e0s!r}",
        "--model=ScaleShiftMACE",
        f"--num_channels={SIZES[size]['num_channels']}",
        f"--max_L={SIZES[size]['max_L']}",
        "--num_interactions=2",
        "--correlation=3",
        "--r_max=5.0",
        "--batch_size=10",
        "--valid_batch_size=50",
        f"--max_num_epochs={epochs}",
        "--swa",
        f"--start_swa={start_swa}",
        "--swa_energy_weight=1000",
        "--swa_forces_weight=100",
        "--ema",
        "--ema_decay=0.99",
        "--amsgrad",
        f"--default_dtype={dtype}",
        f"--device={device}",
        "--save_cpu",
        "--restart_latest",
        f"--work_dir={work}",
        f"--model_dir={work}",
    ]


def train_one(name: str, seed: int, args) -> Path | None:
    spec = DATASETS[name]
    target = seed_model_path("mace", name, seed, args.size, args.cache)
    if target.exists():
        log.info("%s seed %d: %s exists, skipping", name, seed, target)
        return target
    work = model_dir(args.cache, name, args.size) / "work" / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    epochs = args.epochs or spec["epochs"]
    start_swa = min(spec["start_swa"], max(epochs - 1, 1)) if args.epochs else spec["start_swa"]
    cmd = train_command(name, spec, seed, work, args.data, args.dtype, epochs, start_swa, args.size, args.device)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    log.info("%s seed %d: training (%d epochs, stage two from %d) in %s", name, seed, epochs, start_swa, work)
    started = time.time()
    with open(work / "mace_run_train.out", "a") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)
    minutes = (time.time() - started) / 60
    produced = work / f"seed{seed}_stagetwo.model"
    if rc != 0 or not produced.exists():
        log.error(
            "%s seed %d: mace_run_train failed (rc %d) after %.1f min; see %s",
            name,
            seed,
            rc,
            minutes,
            work / "mace_run_train.out",
        )
        return None
    partial = target.with_suffix(".model.partial")
    shutil.copyfile(produced, partial)
    os.replace(partial, target)  # atomic: a model in the cache is always complete
    log.info("%s seed %d: done in %.1f min -> %s", name, seed, minutes, target)
    return target


def evaluate(model_path: Path, structures, batch: int = 32) -> dict:
    from probe_mace import MACEAdapter

    return evaluate_adapter(MACEAdapter([model_path]), structures, batch)


def add_arguments(parser) -> None:
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (mace_run_train's --device)")
