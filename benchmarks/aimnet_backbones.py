"""Train the AIMNet2 backbones the benchmarks probe, with aimnet's own training tool.

``aimnet train`` (aimnet 0.2.5's click command, run in process so that torch/numpy can be
seeded; ``wandb: null``; omegaconf + pytorch-ignite from ``probe-aimnet[train]``) on
aimnet's HDF5 layout, SAE by linear regression, then ``aimnet export`` to the v2 ``.pt``
format (SAE baked into float64 atomic shifts; long-range Coulomb moved to the
calculator). Architecture, the expressiveness axis (``--size``): the bundled ``aimnet2.yaml`` (3 passes,
charges, Coulomb) with smaller widths (``small``: ``probe_aimnet.training.small_model_config``,
~0.25 M parameters) or as published (``large``: MLP widths 512/380, 256-wide AIM vector).
Loss: aimnet's energy (per sqrt(atoms)) + forces MSE, weights per dataset below; RAdam lr
1e-3, ReduceLROnPlateau.
Each training is capped in wall time (``--minutes``, default 5.5 on one CPU thread).

    ethanol: ../shared/data/ethanol/train.xyz (900 train / 100 valid), held out: test_MD.xyz
    3bpa:    ../shared/data/3bpa/train_300K.xyz (450 / 50), held out: train_mixedT.xyz
             configurations that are not in train_300K.xyz (as signal_ablation)

Models go to ``benchmarks/cache/aimnet/<dataset>[-large]/seed<k>.pt``; held-out errors of
every model to ``benchmarks/cache/aimnet/metrics.json``. One training at a time. aimnet trains
on the GPU when torch sees one (its own choice); aimnet needs NVIDIA warp at import.

    python benchmarks/aimnet_backbones.py                      # everything, seeds 1..4
    python benchmarks/aimnet_backbones.py --datasets ethanol --seeds 1 2
    python benchmarks/aimnet_backbones.py --size large --datasets 3bpa
    python benchmarks/aimnet_backbones.py --evaluate-only      # metrics of existing models
    python benchmarks/aimnet_backbones.py --table benchmarks/results/signal_aimnet_ethanol_energy_main.json
    python benchmarks/aimnet_backbones.py --hook-overhead --datasets ethanol
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

try:  # as `python -m benchmarks.<name>` or as a script from the repository root
    from benchmarks.backbone_common import evaluate_adapter, held_out, model_dir, train_in_parallel, update_metrics
except ImportError:
    from backbone_common import evaluate_adapter, held_out, model_dir, train_in_parallel, update_metrics

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
CACHE = REPO / "benchmarks" / "cache" / "aimnet"

# The epoch limit is never reached: the wall-time cap (--minutes) ends each training.
# 3bpa: with ethanol's settings (batch 32, forces weight 0.2) a first attempt learned
# energies but not forces in the ~10 epochs 5.5 min allow on a shared CPU (27 atoms,
# ~9x the pairs of ethanol per structure): smaller batches (more steps) and forces
# weighted like energies.
DATASETS = {
    "ethanol": {"train": "ethanol/train.xyz", "valid_fraction": 0.1, "epochs": 200,
                "batch_size": 32, "forces_weight": 0.2, "lr": 1e-3},
    "3bpa": {"train": "3bpa/train_300K.xyz", "valid_fraction": 0.1, "epochs": 200,
             "batch_size": 16, "forces_weight": 1.0, "lr": 1e-3},
}

SIZES = ("small", "large")

log = logging.getLogger("aimnet_backbones")


def model_config(size: str) -> dict:
    import yaml
    from probe_aimnet import training

    if size == "small":
        return training.small_model_config()
    return yaml.safe_load(training.default_model_yaml().read_text())


def split(frames, fraction, seed):
    order = np.random.default_rng(seed).permutation(len(frames))
    n_valid = int(round(fraction * len(frames)))
    return [frames[i] for i in order[n_valid:]], [frames[i] for i in order[:n_valid]]


def train_one(name: str, seed: int, args) -> Path | None:
    from ase.io import read
    from probe_aimnet import training

    spec = DATASETS[name]
    target = model_dir(args.cache, name, args.size) / f"seed{seed}.pt"
    if target.exists():
        log.info("%s seed %d: %s exists, skipping", name, seed, target)
        return target
    work = target.parent / "work" / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    frames = read(args.data / spec["train"], ":")
    train_frames, valid_frames = split(frames, spec["valid_fraction"], seed)
    epochs = args.epochs or spec["epochs"]
    log.info("%s seed %d: aimnet train, %s model (%d train / %d valid, <= %d epochs, <= %.1f min) in %s",
             name, seed, args.size, len(train_frames), len(valid_frames), epochs, args.minutes, work)
    started = time.time()
    try:
        training.train_from_frames(train_frames, valid_frames, target, seed, epochs, work,
                                   model_cfg=model_config(args.size),
                                   max_seconds=args.minutes * 60, batch_size=spec["batch_size"],
                                   forces_weight=spec["forces_weight"], lr=spec["lr"])
    except Exception:  # noqa: BLE001 - logged, the next model is trained
        log.exception("%s seed %d: training failed", name, seed)
        return None
    log.info("%s seed %d: done in %.1f min -> %s", name, seed, (time.time() - started) / 60, target)
    return target


def evaluate(model_path: Path, structures, batch: int = 32) -> dict:
    from probe_aimnet import AIMNet2Adapter

    adapter = AIMNet2Adapter([model_path])
    return {**evaluate_adapter(adapter, structures, batch),
            "n_parameters": int(sum(p.numel() for p in adapter.models[0].parameters()))}


def bootstrap_table(json_path: Path) -> Path:
    """``<run>_bootstrap.md`` next to a signal_ablation JSON: per backbone seed (probe seed 0,
    default recipe), AUROC, AURC, Spearman and ECE with 95 % bootstrap intervals."""
    payload = json.loads(Path(json_path).read_text())
    lines = [f"### {payload['backbone']} / {payload['dataset']}: bootstrap 95 % intervals "
             f"(probe seed 0, {payload['n_heldout']} held-out, half scored)", "",
             "| backbone | signal | AUROC | AURC | Spearman | ECE |", "|---|---|---|---|---|---|"]
    for seed, signals in payload["bootstrap_seed0"].items():
        for signal, metrics in signals.items():
            cells = []
            for key in ("auroc", "aurc", "spearman", "ece"):
                if key in metrics:
                    value, low, high = metrics[key]
                    cells.append(f"{value:.3f} [{low:.3f}, {high:.3f}]")
                else:
                    cells.append("—")
            lines.append(f"| {seed} | {signal} | " + " | ".join(cells) + " |")
    out = Path(json_path).with_name(Path(json_path).stem + "_bootstrap.md")
    out.write_text("\n".join(lines) + "\n")
    return out


def hook_overhead(name: str, args, n: int = 200, repeats: int = 15) -> dict:
    """Backbone pass with and without PROBE's hooks (all declared layers), interleaved so
    that a busy machine slows both alike; medians and the median of paired ratios."""
    from probe_aimnet import AIMNet2Adapter

    model = args.cache / name / "seed1.pt"
    frames = held_out(name, args.data)[:n]
    adapter = AIMNet2Adapter([model], layers=[layer.name for layer in AIMNet2Adapter([model]).feature_layers()])

    def plain():
        for i in range(0, n, 32):
            adapter.predict(adapter.models[0], frames[i:i + 32], True)

    def hooked():
        for i in range(0, n, 32):
            adapter.run(frames[i:i + 32], compute_forces=True, members=False)

    plain(), hooked()  # warm-up
    times = {"plain": [], "hooked": []}
    for _ in range(repeats):
        for key, fn in (("plain", plain), ("hooked", hooked)):
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    ratios = np.array(times["hooked"]) / np.array(times["plain"])
    result = {"dataset": name, "structures": n, "repeats": repeats, "layers": adapter.layers,
              "plain_median_s": float(np.median(times["plain"])),
              "hooked_median_s": float(np.median(times["hooked"])),
              "paired_ratio_median": float(np.median(ratios)),
              "paired_ratio_iqr": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))]}
    out = REPO / "benchmarks" / "results" / f"aimnet_hook_overhead_{name}.json"
    out.write_text(json.dumps(result, indent=2))
    return result


def train_in_processes(jobs, args) -> None:
    """Each (dataset, seed) trained by this script in a process of its own, ``--parallel`` at
    a time (aimnet trains in process, so threads alone would share one interpreter)."""
    import subprocess

    def one(job):
        name, seed = job
        cmd = [sys.executable, "-m", "benchmarks.aimnet_backbones", "--datasets", name,
               "--seeds", str(seed), "--size", args.size, "--data", str(args.data),
               "--cache", str(args.cache), "--minutes", str(args.minutes),
               "--threads", str(args.threads), "--no-evaluate"]
        if args.epochs:
            cmd += ["--epochs", str(args.epochs)]
        return subprocess.call(cmd, cwd=REPO)

    train_in_parallel(one, jobs, args.parallel)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--size", choices=SIZES, default="small", help="model width (see above)")
    parser.add_argument("--data", type=Path, default=DATA, help="reference data folder")
    parser.add_argument("--cache", type=Path, default=CACHE, help="model cache folder")
    parser.add_argument("--epochs", type=int, default=None, help="override the epoch limit")
    parser.add_argument("--minutes", type=float, default=5.5, help="wall-time cap per model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=1,
                        help="trainings at once, each in its own process (2 on 2 CPU cores)")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--no-evaluate", action="store_true", help="train only")
    parser.add_argument("--table", type=Path, default=None,
                        help="only write the bootstrap table of a signal_ablation JSON")
    parser.add_argument("--hook-overhead", action="store_true",
                        help="only time seed1's pass with and without hooks (interleaved)")
    args = parser.parse_args(argv)
    if args.hook_overhead:
        import torch

        torch.set_num_threads(args.threads)
        for name in args.datasets:
            print(json.dumps(hook_overhead(name, args), indent=2))
        return 0
    if args.table:
        print(bootstrap_table(args.table).read_text())
        return 0
    args.cache.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.cache / "train.log")],
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)

    # dataset-major here: all ethanol models first (the first benchmark needs them)
    jobs = [(name, seed) for name in args.datasets for seed in args.seeds]
    failed = 0
    held = {}
    if args.parallel > 1 and not args.evaluate_only:
        train_in_processes(jobs, args)
    for name, seed in jobs:
        if args.evaluate_only or args.parallel > 1:
            path = model_dir(args.cache, name, args.size) / f"seed{seed}.pt"
            path = path if path.exists() else None
        else:
            path = train_one(name, seed, args)
        if path is None:
            failed += not args.evaluate_only
            continue
        if args.no_evaluate:
            continue
        if name not in held:
            held[name] = held_out(name, args.data)
        metrics = evaluate(path, held[name])
        update_metrics(args.cache, model_dir(args.cache, name, args.size).name, seed, metrics)
        log.info("%s seed %d held-out (%d): E MAE %.1f meV (%.2f meV/atom), mean signed %+.1f "
                 "meV, F MAE %.1f meV/A", name, seed, metrics["n_structures"],
                 metrics["energy_mae_meV"], metrics["energy_mae_meV_per_atom"],
                 metrics["energy_mean_signed_error_meV"], metrics["forces_mae_meV_per_A"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
