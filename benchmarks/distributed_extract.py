"""Wall time and peak memory of `probe extract` with 1 process vs 2 torchrun ranks.

    .nox/mace/bin/python -m benchmarks distributed-extract ranks   # ethanol test_MD.xyz, MACE seed1
    python -m benchmarks distributed-extract gpu --out gpu.json   # toy MLIP on EMT clusters, cuda vs cpu
    python -m benchmarks distributed-extract record-gpu gpu.json  # keep a GPU machine's results

Each run is the real command (`probe extract`, under `torch.distributed.run` for 2 ranks),
launched through this file as a script (``benchmarks/distributed_extract.py worker``, what
torchrun starts on every rank), which records per process the time spent in
the command and the peak resident memory (``resource.getrusage``). One torch thread per
process (OMP_NUM_THREADS=1). Results go to benchmarks/results/distributed_extract.json
(one key per mode).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

# only the light common module here: every rank imports this file and measures its memory
from benchmarks.common import ETHANOL_HELDOUT, REPO, RESULTS

RESULTS_FILE = RESULTS / "distributed_extract.json"


def worker(report_dir, cli_args):
    """Run one `probe` command in this process; write wall time and peak RSS of this rank."""
    from probe_base.cli import main

    start = time.perf_counter()
    code = main(cli_args)
    wall = time.perf_counter() - start
    rank = int(os.environ.get("RANK", 0))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(report_dir, f"rank{rank}.json").write_text(
        json.dumps({"rank": rank, "command_s": round(wall, 3), "peak_rss_mb": round(peak_mb, 1), "exit": code})
    )
    sys.exit(code)


def timed_extract(world, cli_args, workdir, python=sys.executable):
    """Wall time of the whole launch (interpreter start included) and each rank's report."""
    reports = Path(workdir, f"reports{world}")
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    launcher = (
        [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world)]
        if world > 1
        else [python]
    )
    command = launcher + [__file__, "worker", str(reports), "--", *cli_args]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    ranks = [json.loads(p.read_text()) for p in sorted(reports.glob("rank*.json"))]
    return {"world": world, "wall_s": round(wall, 3), "ranks": ranks}


def compare_stores(a, b):
    import numpy as np

    from probe_base.store import load_store

    x, y = load_store(a), load_store(b)
    return {
        "structures": len(x),
        "same_order": bool(np.array_equal(x.source_index, y.source_index)),
        "max_abs_feature_diff": float(np.abs(x.features - y.features).max()),
        "max_abs_energy_diff": float(np.abs(x.energy_pred - y.energy_pred).max()),
    }


def save(key, value, path=RESULTS_FILE):
    path = Path(path)
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(value, indent=2))


def machine():
    return {
        "host_cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


def run_ranks(args):
    """MACE (seed1, the first ethanol backbone) on ethanol test_MD.xyz: 1 process vs 2 ranks."""
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    from probe_base.io.data import count_structures

    n = count_structures(args.input)
    runs = []
    for repeat in range(args.repeats):
        for world in args.worlds:
            output = workdir / f"ethanol_w{world}.h5"
            for stale in workdir.glob(f"ethanol_w{world}.h5*"):
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            cli = [
                "extract",
                "--adapter",
                args.adapter,
                "--model",
                str(args.model),
                "--input",
                str(args.input),
                "--output",
                str(output),
                "--batch-size",
                "32",
                "--device",
                args.device,
            ]
            run = timed_extract(world, cli, workdir, python=args.python)
            run.update(
                repeat=repeat,
                load_average_1min=round(os.getloadavg()[0], 2),
                structures_per_s=[round(n / r["command_s"], 1) for r in run["ranks"]] if world == 1 else None,
            )
            runs.append(run)
            print(run, flush=True)
    save(
        args.key,
        {
            "what": f"probe extract --device {args.device}, {args.adapter} {Path(args.model).name}, "
            f"{Path(args.input).name}, batch 32, OMP_NUM_THREADS=1 per process; world 2 = "
            "torchrun --standalone --nproc-per-node 2 (gloo); wall_s includes interpreter start, "
            "command_s is the `probe extract` call in that rank",
            "machine": machine(),
            "runs": runs,
            "merged_vs_single": compare_stores(workdir / "ethanol_w2.h5", workdir / "ethanol_w1.h5")
            if set(args.worlds) >= {1, 2}
            else None,
        },
        args.results,
    )


def run_gpu(args):
    """Toy MLIP extraction throughput on cuda vs cpu (one process), EMT copper clusters."""
    import ase.io
    import torch

    from probe_base import toy
    from probe_base.store import extract

    torch.manual_seed(0)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "clusters.xyz"
    frames = toy.emt_clusters(args.structures, seed=0, rattle=(0.02, 0.2), vacancy_fraction=0.3)
    ase.io.write(data, frames)
    models = []
    for k in range(2):
        torch.manual_seed(k)
        toy.save_model(toy.TinyMLIP(hidden=64), workdir / f"toy{k}.pt")
        models.append(workdir / f"toy{k}.pt")
    out = {
        "what": f"probe_base.store.extract, toy TinyMLIP(hidden=64) ensemble of 2, {len(frames)} EMT "
        f"Cu clusters ({sum(len(a) for a in frames)} atoms), forces on, one process",
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "machine": machine(),
        "runs": [],
    }
    for device, batch, threads in [("cuda", 32, 1), ("cuda", 256, 1), ("cpu", 32, 1), ("cpu", 32, 16)]:
        if device == "cuda" and not torch.cuda.is_available():
            continue
        torch.set_num_threads(threads)
        adapter = toy.ToyAdapter(models, device=device)
        extract(adapter, data, workdir / "warm.h5", index=":64", batch_size=batch, progress=False, overwrite=True)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        extract(adapter, data, workdir / "s.h5", batch_size=batch, progress=False, overwrite=True)
        wall = time.perf_counter() - start
        out["runs"].append(
            {
                "device": device,
                "batch_size": batch,
                "torch_threads": threads,
                "wall_s": round(wall, 3),
                "structures_per_s": round(len(frames) / wall, 1),
            }
        )
        print(out["runs"][-1], flush=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
    if torch.cuda.is_available():  # the probe trains on the GPU too (one process, --device cuda)
        from probe_base.cli import main

        start = time.perf_counter()
        code = main(
            [
                "fit",
                "--store",
                str(workdir / "s.h5"),
                "--output",
                str(workdir / "g.probe"),
                "--eval-fraction",
                "0.5",
                "--epochs",
                "10",
                "--device",
                "cuda",
            ]
        )
        out["probe_fit_cuda"] = {"exit": code, "wall_s": round(time.perf_counter() - start, 3)}
        Path(args.out).write_text(json.dumps(out, indent=2))
    if args.cpu_ranks:  # CPU scaling of torchrun extraction on this (many-core) machine
        cli = [
            "extract",
            "--adapter",
            "probe_base.toy:ToyAdapter",
            "--model",
            *map(str, models),
            "--input",
            str(data),
            "--output",
            str(workdir / "r.h5"),
            "--batch-size",
            "32",
            "--overwrite",
        ]
        out["torchrun_cpu"] = []
        for world in args.cpu_ranks:
            out["torchrun_cpu"].append(timed_extract(world, cli, workdir))
            print(out["torchrun_cpu"][-1], flush=True)
            Path(args.out).write_text(json.dumps(out, indent=2))


def distributed_extract(args):
    if args.mode == "record-gpu":
        save("gpu", json.loads(Path(args.file).read_text()))
    elif args.mode == "ranks":
        run_ranks(args)
    else:
        run_gpu(args)
    return 0


def register(sub):
    from benchmarks.backbones import seed_model_path

    parser = sub.add_parser(
        "distributed-extract",
        help="`probe extract` wall time and peak memory, 1 process vs torchrun ranks, CPU and GPU",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=distributed_extract)
    modes = parser.add_subparsers(dest="mode", required=True)
    p = modes.add_parser("ranks")
    p.add_argument("--input", type=Path, default=ETHANOL_HELDOUT)
    p.add_argument("--adapter", default="mace")
    p.add_argument(
        "--model", type=Path, default=seed_model_path("mace", "ethanol", 1), help="default: the suite's seed 1"
    )
    p.add_argument("--python", default=sys.executable, help="interpreter with the adapter installed")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--key", default="cpu", help="key of this run in the results file")
    p.add_argument("--results", default=RESULTS_FILE)
    p.add_argument("--workdir", default="/tmp/probe_distributed_extract")
    p = modes.add_parser("record-gpu", help="store a gpu run's --out file in the results")
    p.add_argument("file")
    p = modes.add_parser("gpu")
    p.add_argument("--structures", type=int, default=4000)
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-ranks", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--workdir", default="/tmp/probe_distributed_gpu")


if __name__ == "__main__":  # a rank of timed_extract: `distributed_extract.py worker REPORT_DIR -- ARGS`
    _, report_dir, *cli = sys.argv[1:]
    worker(report_dir, cli[1:] if cli[:1] == ["--"] else cli)
