"""The backbones the benchmarks probe: found in the cache, or trained with each framework's
own tool, 4 seeds per dataset and size.

One driver for every framework. ``train`` runs the (dataset, seed) jobs, skipping models
already in the cache, and scores every model on its held-out set (``benchmarks.common``)
into ``cache/<backbone>/metrics.json``; ``find_models`` / ``find_or_train`` are how every
benchmark gets its models. What differs per framework is a hook module,
``benchmarks/backbones/<backbone>.py``:

    DATASETS            dataset -> the framework's training settings
    SIZES               the sizes it trains (small, large)
    MODEL_SUFFIX        the model file's suffix
    add_arguments(p)    the framework's own options of ``train <backbone>``
    train_one(dataset, seed, args) -> Path | None   one model, atomically into the cache
    evaluate(model, structures) -> dict             held-out errors of one model
    SEED_MAJOR          optional: order the jobs seed-major (default dataset-major)
    train_parallel(jobs, args)   optional: how ``--parallel`` trainings run (default: threads,
                        each training being a subprocess of the framework's tool)

Models go to ``benchmarks/cache/<backbone>/<dataset>[-<size>]/seed<k><suffix>``.

    python -m benchmarks train mace                      # everything, seeds 1..4
    python -m benchmarks train nequip --datasets ethanol --seeds 1 2
    python -m benchmarks train aimnet --evaluate-only    # metrics of existing models
    python -m benchmarks train mace --size large --device cuda --parallel 4   # on a GPU
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, DATA, heldout_structures

FRAMEWORKS = ("mace", "nequip", "aimnet")

log = logging.getLogger("benchmarks.backbones")


def hooks(backbone: str):
    """The hook module of one framework (imports no framework itself)."""
    return importlib.import_module(f"benchmarks.backbones.{backbone}")


# ---- finding models -------------------------------------------------------------------------
def model_dir(cache: Path, dataset: str, size: str = "small") -> Path:
    """cache/<dataset> for the small models (the default), cache/<dataset>-<size> otherwise;
    ``cache`` is one framework's model folder (``CACHE / backbone`` unless ``--cache``)."""
    return cache / (dataset if size == "small" else f"{dataset}-{size}")


def seed_model_path(backbone: str, dataset: str, seed: int, size: str = "small", cache: Path | None = None) -> Path:
    """Where seed ``seed``'s model of ``backbone`` is (or goes once trained); ``cache``: the
    framework's model folder, ``CACHE / backbone`` by default."""
    return model_dir(cache or CACHE / backbone, dataset, size) / f"seed{seed}{hooks(backbone).MODEL_SUFFIX}"


def find_models(backbone: str, dataset: str, size: str = "small") -> list[Path]:
    """The cached seed models, in seed order (one file per seed: seed1.model, seed1.nequip.zip, ...)."""
    return sorted(p for p in model_dir(CACHE / backbone, dataset, size).glob("seed[0-9]*") if p.is_file())


def find_or_train(
    backbone: str,
    dataset: str,
    size: str = "small",
    train: bool = True,
    minimum: int = 1,
    seeds=(1, 2, 3, 4),
    evaluate: bool = True,
) -> list[Path]:
    """The cached seed models; the missing ones of ``seeds`` trained first if asked (and
    scored on the held-out set unless ``evaluate`` is off); exits when fewer than
    ``minimum`` are there."""
    found = find_models(backbone, dataset, size)
    missing = [seed for seed in seeds if not any(p.name.startswith(f"seed{seed}.") for p in found)]
    if missing and train:
        # two single-thread trainings at a time: the 2-core machine's best throughput
        cmd = [
            sys.executable,
            "-m",
            "benchmarks",
            "train",
            backbone,
            "--datasets",
            dataset,
            "--seeds",
            *map(str, missing),
            "--parallel",
            "2",
            "--size",
            size,
        ]
        cmd += [] if evaluate else ["--no-evaluate"]
        print("training:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        found = find_models(backbone, dataset, size)
    if len(found) < minimum:
        raise SystemExit(
            f"{backbone}/{dataset}/{size}: need >= {minimum} trained seeds in "
            f"{model_dir(CACHE / backbone, dataset, size)}, found {len(found)} "
            f"(python -m benchmarks train {backbone} --datasets {dataset} --size {size})"
        )
    return found


# ---- what the hooks share -------------------------------------------------------------------
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


def evaluate_adapter(adapter, structures, batch: int = 32) -> dict:
    """Energy and force errors of the adapter's first model on labelled structures."""
    energies, forces = [], []
    for start in range(0, len(structures), batch):
        out = adapter.run(structures[start : start + batch], compute_forces=True, members=False)
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


# ---- the driver -----------------------------------------------------------------------------
def train(args) -> int:
    """Train the missing (dataset, seed) models of one framework, then score every model on
    its held-out set. 1 if a training failed."""
    framework = hooks(args.backbone)
    args.data, args.cache = args.data.resolve(), args.cache.resolve()  # trainings run in their own folder
    args.cache.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.cache / "train.log")],
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # aimnet trains in this process
    import torch

    torch.set_num_threads(args.threads)
    if getattr(framework, "SEED_MAJOR", False):  # every dataset gets a first model early
        jobs = [(name, seed) for seed in args.seeds for name in args.datasets]
    else:  # one dataset's ensemble before the next
        jobs = [(name, seed) for name in args.datasets for seed in args.seeds]
    if args.parallel > 1 and not args.evaluate_only:
        parallel = getattr(framework, "train_parallel", None)
        if parallel is not None:
            parallel(jobs, args)
        else:
            train_in_parallel(lambda job: framework.train_one(*job, args), jobs, args.parallel)
    failed = 0
    held = {}
    for name, seed in jobs:
        if args.evaluate_only or args.parallel > 1:
            path = seed_model_path(args.backbone, name, seed, args.size, args.cache)
            path = path if path.exists() else None
        else:
            path = framework.train_one(name, seed, args)
        if path is None:
            failed += not args.evaluate_only
            continue
        if args.no_evaluate:
            continue
        if name not in held:
            held[name] = heldout_structures(name, args.data)
        metrics = framework.evaluate(path, held[name])
        update_metrics(args.cache, model_dir(args.cache, name, args.size).name, seed, metrics)
        log.info(
            "%s seed %d held-out (%d): E MAE %.1f meV (%.2f meV/atom), mean signed %+.1f meV, F MAE %.1f meV/A%s",
            name,
            seed,
            metrics["n_structures"],
            metrics["energy_mae_meV"],
            metrics["energy_mae_meV_per_atom"],
            metrics["energy_mean_signed_error_meV"],
            metrics["forces_mae_meV_per_A"],
            f", {metrics['n_parameters']} parameters" if "n_parameters" in metrics else "",
        )
    return 1 if failed else 0


def register(sub) -> None:
    """``train <backbone>``: the shared options, then each framework's own."""
    t = sub.add_parser(
        "train",
        help="train / evaluate the cached backbones (4 seeds) with each framework's own tool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    frameworks = t.add_subparsers(dest="backbone", required=True)
    for backbone in FRAMEWORKS:
        framework = hooks(backbone)
        p = frameworks.add_parser(
            backbone,
            help=framework.__doc__.split("\n")[0],
            description=framework.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--datasets", nargs="+", default=list(framework.DATASETS), choices=list(framework.DATASETS))
        p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4])
        p.add_argument("--size", default="small", choices=list(framework.SIZES), help="model size (see above)")
        p.add_argument("--data", type=Path, default=DATA, help="reference data folder")
        p.add_argument("--cache", type=Path, default=CACHE / backbone, help="model cache folder")
        p.add_argument(
            "--epochs", type=int, default=None, help="override the per-dataset number of epochs (e.g. 1 to smoke-test)"
        )
        p.add_argument("--threads", type=int, default=1)
        p.add_argument(
            "--parallel",
            type=int,
            default=1,
            help="trainings at once, each in its own process (2 on 2 CPU cores; more on a GPU)",
        )
        p.add_argument("--evaluate-only", action="store_true", help="metrics of existing models")
        p.add_argument(
            "--no-evaluate", action="store_true", help=f"train only (held-out metrics need probe-{backbone} installed)"
        )
        framework.add_arguments(p)
        p.set_defaults(handler=train)
