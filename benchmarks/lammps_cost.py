"""What one MD step costs in LAMMPS with the probe (issue 26), against LAMMPS without it
and the same MD in ASE.

The toy backbone of the core (``probe_base.toy``, trained in seconds on EMT copper
clusters) drives NVE dynamics of Cu icosahedra (13, 55, 147 atoms) four ways:

``lammps``          LAMMPS (``probe_base.integrations.lammps_md.run_lammps``) with the plain calculator
``lammps + probe``  the same with the probed calculator: P(reliable) and novelty in thermo,
                    per-atom novelty and predicted force error written to LAMMPS every step
``ase``             ASE's VelocityVerlet with the plain calculator
``ase + probe``     the same with the probed calculator

The probe is ``probe fit``'s default (self-attention network, domain test, per-atom
force-error head) fitted on 200 EMT-labelled clusters. Each configuration runs ``--steps``
steps after 10 warm-up steps, in interleaved rounds (the order rotates), and the median
CPU time per step of the rounds gives the ratios (on a shared machine wall time also
counts other processes' turns; the wall times are in the JSON); LAMMPS's is its own loop
time of the timed ``run`` times its reported CPU use. One thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``).

    python -m benchmarks lammps-cost                      # 13 55 147 atoms, 200 steps, 5 rounds
    python -m benchmarks lammps-cost --sizes 13 55 --steps 100 --rounds 2

Writes ``benchmarks/results/lammps_cost.{json,md,png}``.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS

CONFIGS = ("lammps", "lammps + probe", "ase", "ase + probe")
SHELLS = {13: 2, 55: 3, 147: 4, 309: 5}  # icosahedron atoms -> shells
WARMUP = 10


def _backbone_and_probe(folder: Path):
    """A toy model and a probe fitted on its features (domain + per-atom head), ~30 s."""
    import ase.io

    from probe_base import toy
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.store import extract
    from probe_base.workflow.fit import fit_probe

    train = toy.emt_clusters(120, seed=0, rattle=(0.02, 0.08))
    model = toy.train(train, [a.get_potential_energy() for a in train], [a.get_forces() for a in train], epochs=25)
    model_path = folder / "toy.pt"
    toy.save_model(model, model_path)
    heldout = folder / "heldout.xyz"
    ase.io.write(heldout, toy.emt_clusters(200, seed=1, rattle=(0.02, 0.2), vacancy_fraction=0.3))
    store = folder / "heldout.h5"
    extract(toy.ToyAdapter([model_path]), heldout, store, progress=False)
    probe_path = folder / "toy.probe"
    classifier = ProbeClassifier(max_epochs=100, patience=15, seed=0)
    # 160 fitting structures: the decision rule needs >= 19 reliable calibration structures at 5 %
    fit_probe(store, probe_path, LabelSpec("energy", quantile=0.5), classifier, eval_fraction=0.2)
    return model_path, probe_path


def _icosahedron(n_atoms):
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Cu", SHELLS[n_atoms])
    atoms.set_cell(None)
    atoms.pbc = False
    atoms.positions += np.random.default_rng(0).normal(0, 0.03, atoms.positions.shape)
    return atoms


def _data_file(path: Path, atoms):
    lo, hi = atoms.positions.min(axis=0) - 15, atoms.positions.max(axis=0) + 15
    lines = [f"Cu{len(atoms)}", "", f"{len(atoms)} atoms", "1 atom types", ""]
    lines += [f"{lo[k]:.10f} {hi[k]:.10f} {a}lo {a}hi" for k, a in enumerate("xyz")]
    lines += ["", "Masses", "", "1 63.546", "", "Atoms # atomic", ""]
    lines += [f"{i + 1} 1 {x:.12f} {y:.12f} {z:.12f}" for i, (x, y, z) in enumerate(atoms.positions)]
    path.write_text("\n".join(lines) + "\n")


def _lammps_step(calc, data: Path, steps: int, log: Path, probed: bool) -> tuple[float, float]:
    """(wall, CPU) seconds per step of the timed run: LAMMPS's loop time and its CPU use."""
    from probe_base.integrations.lammps_md import run_lammps

    thermo = "step pe ke etotal" + (" v_probe_reliability v_probe_novelty v_probe_max_error" if probed else "")
    commands = [
        "units metal",
        "atom_style atomic",
        "boundary s s s",
        f"read_data {data}",
        "velocity all create 300 4 dist gaussian",
        "fix nve all nve",
        "timestep 0.002",
        f"thermo_style custom {thermo}",
        "thermo 50",
        f"run {WARMUP}",
        f"run {steps}",
    ]
    run_lammps(commands, calc, ["Cu"], policy="ignore", log=log, screen=False)
    text = log.read_text()
    seconds, n = re.findall(r"Loop time of ([0-9.eE+-]+) on 1 procs for (\d+) steps", text)[-1]
    cpu_percent = re.findall(r"([0-9.]+)% CPU use with 1 MPI tasks", text)[-1]
    assert int(n) == steps
    wall = float(seconds) / steps
    return wall, wall * float(cpu_percent) / 100


def _ase_step(calc, atoms, steps: int) -> tuple[float, float]:
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    rng = np.random.default_rng(4)
    masses = atoms.get_masses()[:, None]
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(300 * units.kB * masses))
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=2 * units.fs)
    dyn.run(WARMUP)
    start, cpu = time.perf_counter(), time.process_time()
    dyn.run(steps)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def measure(sizes, steps, rounds, folder: Path) -> dict:
    import torch
    from tqdm.auto import tqdm

    from probe_base import toy
    from probe_base.integrations.calculator import attach
    from probe_base.integrations.lammps_md import load_lammps

    torch.set_num_threads(1)
    load_lammps()
    toy.register_toy_adapter()
    model_path, probe_path = _backbone_and_probe(folder)
    plain = toy.ToyCalculator(model_path)
    probed = attach(toy.ToyCalculator(model_path), probe_path, policy="ignore")
    times = {n: {c: [] for c in CONFIGS} for n in sizes}  # (wall, cpu) per round
    bar = tqdm(total=len(sizes) * rounds * len(CONFIGS), desc="lammps-cost", unit="run")
    for n in sizes:
        atoms = _icosahedron(n)
        data = folder / f"cu{n}.data"
        _data_file(data, atoms)
        for r in range(rounds):
            order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]  # rotate: load drifts cancel
            for config in order:
                calc = probed if config.endswith("probe") else plain
                if config.startswith("lammps"):
                    seconds = _lammps_step(calc, data, steps, folder / "log.lammps", calc is probed)
                else:
                    seconds = _ase_step(calc, atoms, steps)
                times[n][config].append(seconds)
                bar.update()
    bar.close()
    rows = []
    for n in sizes:
        wall = {c: float(np.median([t[0] for t in times[n][c]])) for c in CONFIGS}
        median = {c: float(np.median([t[1] for t in times[n][c]])) for c in CONFIGS}  # CPU: the ratios
        rows.append(
            {
                "atoms": n,
                "cpu_ms_per_step": {c: 1e3 * median[c] for c in CONFIGS},
                "wall_ms_per_step": {c: 1e3 * wall[c] for c in CONFIGS},
                "rounds_wall_cpu_ms": {c: [[1e3 * w, 1e3 * u] for w, u in times[n][c]] for c in CONFIGS},
                "probe_overhead_lammps": median["lammps + probe"] / median["lammps"] - 1,
                "probe_overhead_ase": median["ase + probe"] / median["ase"] - 1,
                "lammps_over_ase": median["lammps"] / median["ase"],
                "lammps_probe_over_ase_probe": median["lammps + probe"] / median["ase + probe"],
            }
        )
    return {
        "backbone": "probe_base.toy TinyMLIP (hidden 32, 2 interactions, all-pairs within 4.5 Å)",
        "probe": "probe fit defaults: self-attention, domain test, per-atom force-error head",
        "system": "Cu icosahedra, NVE 300 K, dt 2 fs, no cell",
        "steps": steps,
        "warmup_steps": WARMUP,
        "rounds": rounds,
        "threads": 1,
        "lammps_version": _lammps_version(),
        "rows": rows,
    }


def _lammps_version() -> str:
    from importlib.metadata import version

    return version("lammps")


def markdown(result: dict) -> str:
    lines = [
        "# MD step cost in LAMMPS with the probe (`python -m benchmarks lammps-cost`)",
        "",
        f"{result['backbone']}; {result['probe']}; {result['system']}. Median of {result['rounds']} "
        f"interleaved rounds of {result['steps']} steps (after {result['warmup_steps']} warm-up), one "
        f"thread, LAMMPS {result['lammps_version']} (its loop time x its CPU use), CPU time per step "
        "(wall times in lammps_cost.json).",
        "",
        "| atoms | LAMMPS (ms) | LAMMPS + probe (ms) | ASE (ms) | ASE + probe (ms) | probe in LAMMPS | probe in ASE | LAMMPS / ASE | LAMMPS+probe / ASE+probe |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        ms = row["cpu_ms_per_step"]
        lines.append(
            f"| {row['atoms']} | {ms['lammps']:.2f} | {ms['lammps + probe']:.2f} | {ms['ase']:.2f} | "
            f"{ms['ase + probe']:.2f} | {100 * row['probe_overhead_lammps']:+.0f} % | "
            f"{100 * row['probe_overhead_ase']:+.0f} % | {row['lammps_over_ase']:.2f} | "
            f"{row['lammps_probe_over_ase_probe']:.2f} |"
        )
    lines += [
        "",
        "The toy backbone is tiny (a few ms per step), so the probe's fixed cost per step "
        "(features, attention, domain k-NN, per-atom head) is a large fraction of it here; "
        "with a production backbone (MACE, 10-100 ms per step) the same absolute cost is a "
        "small fraction (`python -m benchmarks step-cost`).",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path):
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probe_base.artifact import atomic_write

    sizes = [row["atoms"] for row in result["rows"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for config, style in zip(CONFIGS, ("o-", "o--", "s-", "s--")):
        ax.plot(sizes, [row["cpu_ms_per_step"][config] for row in result["rows"]], style, label=config)
    ax.set_xlabel("atoms (Cu icosahedron)")
    ax.set_ylabel("CPU time per MD step (ms)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # the sizes alone, not 10^k
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_title("toy backbone, 1 thread")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def lammps_cost(args) -> int:
    from benchmarks.report import write_result_files

    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory(prefix="lammps-cost-") as tmp:
        result = measure(args.sizes, args.steps, args.rounds, Path(tmp))
    write_result_files(Path(args.output_dir), "lammps_cost", result, markdown(result), plot)
    return 0


def register(sub):
    s = sub.add_parser("lammps-cost", help="MD step time in LAMMPS with and without the probe, and in ASE")
    s.add_argument("--sizes", nargs="+", type=int, choices=sorted(SHELLS), default=[13, 55, 147], help="atoms")
    s.add_argument("--steps", type=int, default=200, help="timed steps per run")
    s.add_argument("--rounds", type=int, default=5, help="interleaved rounds per configuration")
    s.add_argument("--output-dir", type=Path, default=RESULTS)
    s.set_defaults(handler=lammps_cost)
