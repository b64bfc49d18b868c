"""What one batched MD step costs in TorchSim with the probe (issue 26), against TorchSim
without it.

One small MACE model (ScaleShiftMACE with the benchmark backbones' architecture: 32 scalar
channels, max_L 0, 2 interactions, correlation 3, r_max 5 Å; randomly initialised, since
the cost of a step does not depend on training; float64, TorchSim's default; parameters
frozen in both configurations, as mace's own calculator does) drives NVT
Langevin dynamics of batches of 1, 4 and 16 ethanol molecules (9 atoms each, no cell),
three ways:

``torchsim``            ``ts.integrate`` with TorchSim's own ``MaceModel``
``torchsim + probe``    ``probe_mace.torchsim.run_torchsim``: features hooked in the same
                        MACE pass, every system scored every step (P(reliable), domain
                        novelty, per-atom force-error head), the history recorded
``probe every 10``      the same, scoring every 10th step (``interval=10``)

The probe has ``probe fit``'s parts (self-attention network, domain test, per-atom error
head) fitted on 100 rattled ethanols (labels from the rattle size; per-atom errors from a
second model's disagreement: scoring costs the same whatever it was fitted on). Each
configuration runs ``--steps`` steps in interleaved rounds (the order rotates); the median
CPU time per step of the rounds gives the ratios (on a shared machine wall time also counts
other processes' turns; the wall times are in the JSON). One thread.

    python -m benchmarks torchsim-cost                    # batches 1 4 16, 100 steps, 5 rounds
    python -m benchmarks torchsim-cost --batches 1 4 --steps 30 --rounds 2

Needs the mace plugin with its ``torchsim`` extra (nox session ``mace``'s environment).
Writes ``benchmarks/results/torchsim_cost.{json,md,png}``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS
from benchmarks.torchsim_cost_setup import _backbone_and_probe, _ethanols

CONFIGS = ("torchsim", "torchsim + probe", "probe every 10")
TIMESTEP_FS = 0.5
TEMPERATURE_K = 300.0


class _Clock:
    """CPU seconds spent inside wrapped methods (patched on their class for the run)."""

    def __init__(self):
        self.seconds, self._undo = {}, []

    def wrap(self, owner, name, key):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[key] = self.seconds.get(key, 0.0) + time.process_time() - start

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def restore(self):
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)


def _timed(fn) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def measure(batches, steps, rounds, folder: Path) -> dict:
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(1)
    import torch_sim as ts
    from probe_mace.torchsim import run_torchsim
    from torch_sim.models.mace import MaceModel

    model_path, probe_path = _backbone_and_probe(folder)
    module = torch.load(model_path, weights_only=False)
    for param in module.parameters():  # frozen, as in mace's calculator and the probed model: like for like
        param.requires_grad_(False)
    plain = MaceModel(module, device=torch.device("cpu"), compute_stress=False)
    from probe_mace.torchsim_model import ProbedMaceModel

    probed = ProbedMaceModel(model_path, probe_path, device="cpu", keep_history=False)

    def run(config, systems, n_steps):
        if config == "torchsim":
            ts.integrate(
                system=systems,
                model=plain,
                n_steps=n_steps,
                timestep=TIMESTEP_FS * 1e-3,
                temperature=TEMPERATURE_K,
                integrator=ts.nvt_langevin,
                seed=0,
            )
        else:
            interval = 10 if config == "probe every 10" else 1
            result = run_torchsim(
                systems,
                probed,
                n_steps=n_steps,
                timestep_fs=TIMESTEP_FS,
                temperature_K=TEMPERATURE_K,
                policy="ignore",
                interval=interval,
                seed=0,
            )
            assert result.n_steps == n_steps and len(result.records) == n_steps // interval + 1

    # paired, within the probed runs: the probe's own CPU time per step (its forward minus
    # MaceModel's, plus the policy's bookkeeping), free of the load drifts between runs
    from probe_mace.torchsim_monitor import BatchMonitor

    clock = _Clock()
    clock.wrap(type(probed), "forward", "probed forward")
    clock.wrap(MaceModel, "forward", "mace forward")
    clock.wrap(BatchMonitor, "see", "policy")
    times = {b: {c: [] for c in CONFIGS} for b in batches}
    probe_own = {b: [] for b in batches}
    bar = tqdm(total=len(batches) * rounds * len(CONFIGS), desc="torchsim-cost", unit="run")
    for b in batches:
        systems = _ethanols(b, seed=b)
        for config in CONFIGS:  # warm-up: first calls build caches (traces, the domain's search)
            run(config, systems, 2)
        for r in range(rounds):
            order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]  # rotate: load drifts cancel
            for config in order:
                clock.seconds.clear()
                wall, cpu = _timed(lambda: run(config, systems, steps))  # noqa: B023 - called at once
                times[b][config].append((wall / steps, cpu / steps))
                if config == "torchsim + probe":
                    seconds = clock.seconds
                    own = seconds["probed forward"] - seconds["mace forward"] + seconds["policy"]
                    probe_own[b].append(own / (steps + 1))  # steps + the initial state
                bar.update()
    bar.close()
    clock.restore()
    rows = []
    for b in batches:
        wall = {c: float(np.median([t[0] for t in times[b][c]])) for c in CONFIGS}
        cpu = {c: float(np.median([t[1] for t in times[b][c]])) for c in CONFIGS}
        rows.append(
            {
                "systems": b,
                "atoms": 9 * b,
                "cpu_ms_per_step": {c: 1e3 * cpu[c] for c in CONFIGS},
                "wall_ms_per_step": {c: 1e3 * wall[c] for c in CONFIGS},
                "rounds_wall_cpu_ms": {c: [[1e3 * w, 1e3 * u] for w, u in times[b][c]] for c in CONFIGS},
                "probe_over_plain": cpu["torchsim + probe"] / cpu["torchsim"],
                "probe_every_10_over_plain": cpu["probe every 10"] / cpu["torchsim"],
                "probe_over_plain_wall": wall["torchsim + probe"] / wall["torchsim"],
                "probe_own_cpu_ms_per_step": 1e3 * float(np.median(probe_own[b])),
                "probe_own_over_plain": float(np.median(probe_own[b])) / cpu["torchsim"],
            }
        )
    from importlib.metadata import version

    return {
        "backbone": "ScaleShiftMACE 32x0e, 2 interactions, correlation 3, max_ell 3, r_max 5 Å (random init, float64)",
        "probe": "self-attention network (ProbeClassifier defaults), domain test, per-atom force-error head",
        "system": f"batches of ethanol molecules (9 atoms, no cell), NVT Langevin {TEMPERATURE_K:g} K, dt {TIMESTEP_FS} fs",
        "steps": steps,
        "rounds": rounds,
        "threads": 1,
        "versions": {p: version(p) for p in ("torch-sim-atomistic", "mace-torch", "torch")},
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        "# Batched MD step cost in TorchSim with the probe (`python -m benchmarks torchsim-cost`)",
        "",
        f"{result['backbone']}; {result['probe']}; {result['system']}. Median of {result['rounds']} "
        f"interleaved rounds of {result['steps']} steps, one thread, CPU time per step (wall times in "
        "torchsim_cost.json); TorchSim " + result["versions"]["torch-sim-atomistic"] + ".",
        "",
        "| systems (atoms) | TorchSim (ms) | + probe every step (ms) | + probe every 10 (ms) | ratio | ratio, every 10 | probe's own (ms, paired) | probe's own / TorchSim step |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        ms = row["cpu_ms_per_step"]
        lines.append(
            f"| {row['systems']} ({row['atoms']}) | {ms['torchsim']:.1f} | {ms['torchsim + probe']:.1f} | "
            f"{ms['probe every 10']:.1f} | {row['probe_over_plain']:.2f}x | {row['probe_every_10_over_plain']:.2f}x | "
            f"{row['probe_own_cpu_ms_per_step']:.2f} | {100 * row['probe_own_over_plain']:.1f} % |"
        )
    lines += [
        "",
        "The features come from TorchSim's own MACE pass (forward hooks), so the probe adds its "
        "scoring only (network, domain k-NN, per-atom head, one call for the whole batch), not a "
        "second backbone pass. The ratios compare separate runs (the load of a shared machine "
        "drifts between them: see the rounds in the JSON); the paired column times the probe "
        "inside the probed runs (its forward minus MaceModel's, plus the policy's bookkeeping).",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probe_base.artifact import atomic_write

    systems = [row["systems"] for row in result["rows"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for config, style in zip(CONFIGS, ("o-", "s--", "^:")):
        ax.plot(systems, [row["cpu_ms_per_step"][config] for row in result["rows"]], style, label=config)
    ax.set_xlabel("ethanol molecules in the batch")
    ax.set_ylabel("CPU time per MD step (ms)")
    ax.set_xscale("log")
    ax.set_xticks(systems, [str(s) for s in systems])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_title("TorchSim, small MACE, 1 thread")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def torchsim_cost(args) -> int:
    from benchmarks.report import write_result_files

    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory(prefix="torchsim-cost-") as tmp:
        result = measure(args.batches, args.steps, args.rounds, Path(tmp))
    write_result_files(Path(args.output_dir), "torchsim_cost", result, markdown(result), plot)
    return 0


def register(sub):
    s = sub.add_parser("torchsim-cost", help="batched MD step time in TorchSim with and without the probe")
    s.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16], help="ethanol molecules per batch")
    s.add_argument("--steps", type=int, default=100, help="timed steps per run")
    s.add_argument("--rounds", type=int, default=5, help="interleaved rounds per configuration")
    s.add_argument("--output-dir", type=Path, default=RESULTS)
    s.set_defaults(handler=torchsim_cost)
