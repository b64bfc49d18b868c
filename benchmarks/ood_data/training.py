"""Stage ``train``: the seeds of each backbone on the xTB training set. MACE and NequIP
train through the ``train_one`` hooks of ``benchmarks/backbones/`` with the xTB set
registered as a dataset; AIMNet2 runs the same chain as ``benchmarks/backbones/aimnet.py``
but with its own self-atomic energies, so that part stays here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np

from benchmarks.common import REPO
from benchmarks.ood_data.labelling import stage_isolated
from benchmarks.ood_data.layout import ISOLATED, MACE_EPOCHS, MACE_START_SWA, MODELS, TRAIN
from benchmarks.ood_data.summary import update_summary


def model_path(backbone: str, seed: int) -> Path:
    """models/<backbone>/seed<k>.<ext>: the trainers' layout for a dataset named after the
    backbone (``register_dataset``) in the cache folder ``MODELS``."""
    from benchmarks.backbones import seed_model_path

    return seed_model_path(backbone, backbone, seed, cache=MODELS)


def register_dataset(module, backbone: str, spec: dict) -> str:
    """Make the xTB training set a dataset of ``benchmarks/backbones/<backbone>.py``: named
    after the backbone, with ``cache=MODELS`` its models land in models/<backbone>/ (the
    trainers read ``data / spec[...]``; absolute paths win over ``data``)."""
    module.DATASETS[backbone] = spec
    return backbone


def train_seed(backbone: str, seed: int, minutes: float) -> Path | None:
    """One seed with the framework's own trainer, through the backbone's training hooks."""
    import logging

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    MODELS.mkdir(parents=True, exist_ok=True)
    common = dict(cache=MODELS, size="small", epochs=None, data=Path("/"), device="cpu", threads=1)
    if backbone == "mace":
        from benchmarks.backbones import mace as trainer

        name = register_dataset(
            trainer,
            backbone,
            {
                "train": str(TRAIN),
                "isolated": str(ISOLATED),
                "valid_fraction": 0.1,
                "epochs": MACE_EPOCHS,
                "start_swa": MACE_START_SWA,
            },
        )
        return trainer.train_one(name, seed, Namespace(**common, dtype="float32"))
    if backbone == "nequip":
        from benchmarks.backbones import nequip as trainer

        name = register_dataset(
            trainer, backbone, {"train": str(TRAIN), "isolated": str(ISOLATED), "split": (900, 100), "max_epochs": 40}
        )
        # Lightning's max_time covers the epochs; startup and packaging add ~0.5 min
        return trainer.train_one(name, seed, Namespace(**common, max_minutes=minutes - 0.5))
    if backbone == "aimnet":
        return train_aimnet_seed(seed, minutes)
    raise ValueError(backbone)


def aimnet_sae(frames) -> dict[int, float]:
    """AIMNet2's self-atomic energies: the xTB isolated-atom energies plus one per-atom shift
    common to all elements, the mean per-atom (E - sum of isolated-atom energies) of the
    training set. aimnet's own linear regression is undetermined on one composition (C2H6O:
    any split of the molecule's energy among H, C and O fits), and without the shift the
    network would first have to learn a ~-5 eV/atom offset. The same reference as
    ScaleShiftMACE's (E0s + the mean per-atom interaction energy)."""
    from ase.data import atomic_numbers

    isolated = {atomic_numbers[s]: e for s, e in stage_isolated().items()}
    shift = float(np.mean([(a.get_potential_energy() - sum(isolated[z] for z in a.numbers)) / len(a) for a in frames]))
    return {int(z): float(e + shift) for z, e in sorted(isolated.items())}


def train_aimnet_seed(seed: int, minutes: float) -> Path | None:
    """aimnet's chain as ``benchmarks/backbones/aimnet.py`` runs it (its ethanol settings,
    split and small model), except the SAE (``aimnet_sae``)."""
    import ase.io
    from probe_aimnet import training

    from benchmarks.backbones import aimnet

    target = model_path("aimnet", seed)
    if target.exists():
        print(f"aimnet seed {seed}: {target} exists, skipping", flush=True)
        return target
    spec = aimnet.DATASETS["ethanol"]  # the suite's ethanol settings
    work = target.parent / "work" / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    train_frames, valid_frames = aimnet.split(ase.io.read(TRAIN, ":"), spec["valid_fraction"], seed)
    started = time.time()
    try:
        train_h5 = training.write_dataset(train_frames, work / "train.h5")
        val_h5 = training.write_dataset(valid_frames, work / "val.h5")
        sae = work / "sae.yaml"
        sae.write_text("".join(f"{z}: {e!r}\n" for z, e in aimnet_sae(train_frames).items()))
        weights = work / "weights.pt"
        model_cfg = aimnet.model_config("small")
        training.train(
            model_cfg,
            training.train_config(
                train_h5,
                val_h5,
                sae,
                work,
                spec["epochs"],
                batch_size=spec["batch_size"],
                lr=spec["lr"],
                forces_weight=spec["forces_weight"],
            ),
            weights,
            seed,
            work,
            minutes * 60,
        )
        training.export(weights, model_cfg, sae, target, work)
    except Exception:  # noqa: BLE001 - reported; the other seeds still train
        import traceback

        traceback.print_exc()
        print(f"aimnet seed {seed}: training failed after {(time.time() - started) / 60:.1f} min", flush=True)
        return None
    print(f"aimnet seed {seed}: done in {(time.time() - started) / 60:.1f} min -> {target}", flush=True)
    return target


def stage_train(backbone: str, seeds, parallel: int, minutes: float) -> list[Path]:
    """Every missing seed, ``parallel`` single-thread trainings at a time, each in a process
    of its own (aimnet trains in process)."""
    from concurrent.futures import ThreadPoolExecutor

    if not TRAIN.exists() or not ISOLATED.exists():
        raise SystemExit(f"{TRAIN} or {ISOLATED} missing: run --stage label first")
    missing = [s for s in seeds if not model_path(backbone, s).exists()]
    started = time.perf_counter()
    if len(missing) == 1 or parallel == 1:
        for seed in missing:
            train_seed(backbone, seed, minutes)
    elif missing:
        log_dir = MODELS / backbone
        log_dir.mkdir(parents=True, exist_ok=True)

        def one(seed):
            cmd = [
                sys.executable,
                "-m",
                "benchmarks",
                "ood-data",
                "--backbone",
                backbone,
                "--stage",
                "train",
                "--seeds",
                str(seed),
                "--parallel",
                "1",
                "--minutes",
                str(minutes),
            ]
            with open(log_dir / f"train_seed{seed}.log", "a") as out:
                return subprocess.call(
                    cmd,
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
                )

        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, missing))
    found = [model_path(backbone, s) for s in seeds if model_path(backbone, s).exists()]
    failed = [s for s in seeds if not model_path(backbone, s).exists()]
    print(
        f"{backbone}: {len(found)} models in {MODELS / backbone}"
        + (f"; seeds {failed} FAILED (logs in {MODELS / backbone})" if failed else "")
        + (f" ({(time.perf_counter() - started) / 60:.1f} min)" if missing else ""),
        flush=True,
    )
    if missing:
        update_summary(
            {
                "backbones": {
                    backbone: {
                        "training_wall_minutes": (time.perf_counter() - started) / 60,
                        "train_minutes_cap": minutes,
                        "failed_seeds": failed,
                    }
                }
            }
        )
    return found
