"""The parts of ``step-cost`` that run in a worker process, with the code tree under test
first on ``sys.path`` (``experiment.in_tree`` calls them by name): fitting a timing probe,
and timing plain and probed MD steps in interleaved rounds."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.common import ETHANOL_HELDOUT
from benchmarks.step_cost.models import calculators, replicated_ethanol


def fit_probe(backbone, model, output, attention=None, domain=None):
    """A probe on 100 labelled ethanol structures: the fitting half of a 200-structure store.
    ``attention``, ``domain`` (the domain test and per-atom error head): options of this
    tree's code, left out for the baseline's."""
    from probe_base.labels import LabelSpec
    from probe_base.net.classifier import ProbeClassifier
    from probe_base.plugins import get_adapter_class
    from probe_base.store import extract
    from probe_base.workflow.fit import fit_probe as fit

    adapter = get_adapter_class(backbone)([model])
    store = Path(output).with_suffix(".h5")
    extract(adapter, ETHANOL_HELDOUT, store, index=":200", progress=False)
    options = {} if attention is None else {"attention": attention}  # the baseline has no option
    extra = {} if domain is None else {"domain": domain, "atom_errors": domain}
    fit(
        store,
        output,
        LabelSpec("energy", quantile=0.5),
        ProbeClassifier(max_epochs=20, patience=5, seed=0, **options),
        eval_fraction=0.5,
        **extra,
    )


def _probed_part(calculator):
    """The ProbedCalculator inside a plugin's calculator (nequip keeps it as ``probed``)."""
    return calculator if hasattr(calculator, "artifact") else calculator.probed


def measure_steps(backbone, model, probe, molecules, rounds, target_seconds=3.0):
    """Per size: every step's wall and CPU seconds, plain and probed, in interleaved rounds;
    and the time spent in the probe's scoring call per probed step. CPU time (this process's)
    is what a loaded machine distorts least: the other processes' share is not in it."""
    import torch

    torch.set_num_threads(1)
    plain, probed = calculators(backbone, model, probe)
    # the probe's scoring call per step: this tree's StructureScorer (network, domain test,
    # per-atom head); the code before it scored through the classifier's predict_with_importance
    part = _probed_part(probed)
    owner, name = (
        (part, "_scorer") if hasattr(part, "_scorer") else (part.artifact.classifier, "predict_with_importance")
    )
    inner = getattr(owner, name)
    spent = []

    def timed_predict(*args, **kwargs):
        start = time.process_time()
        out = inner(*args, **kwargs)
        spent.append(time.process_time() - start)
        return out

    setattr(owner, name, timed_predict)
    # the wrapped calculator's own pass inside each probed step: what the step costs
    # without the probe, measured in the same step (paired, so the machine's load cancels)
    wrapped = _probed_part(probed).calculator
    inner_calculate, pass_cpu = wrapped.calculate, []

    def timed_calculate(*args, **kwargs):
        start = time.process_time()
        out = inner_calculate(*args, **kwargs)
        pass_cpu.append(time.process_time() - start)
        return out

    wrapped.calculate = timed_calculate
    rng = np.random.default_rng(0)
    rows = []
    for n in molecules:
        atoms = replicated_ethanol(n)

        def step(calculator, atoms=atoms):
            atoms.calc = calculator
            atoms.positions += rng.normal(0, 1e-3, atoms.positions.shape)
            wall, cpu = time.perf_counter(), time.process_time()
            atoms.get_forces()
            return time.perf_counter() - wall, time.process_time() - cpu

        for calculator in (plain, probed, plain, probed):  # warm-up: graphs, caches
            step(calculator)
        steps = int(np.clip(target_seconds / max(step(plain)[0], 1e-4), 3, 30))
        times = {"plain": [], "probed": []}
        spent.clear()
        probe_part, within = [], []  # per probed step: CPU outside the wrapped pass, and / pass
        for r in range(rounds):
            for name in ("plain", "probed") if r % 2 == 0 else ("probed", "plain"):
                calculator = plain if name == "plain" else probed
                steps_done = []
                for _ in range(steps):
                    pass_cpu.clear()
                    steps_done.append(step(calculator))
                    if calculator is probed:
                        probe_part.append(steps_done[-1][1] - pass_cpu[0])
                        within.append(probe_part[-1] / pass_cpu[0])
                times[name].append(steps_done)
        row = {
            "atoms": len(atoms),
            "steps_per_round": steps,
            "rounds": rounds,
            # per round: median (wall, CPU) seconds of its steps
            "round_medians": {k: np.median(np.array(v), axis=1).tolist() for k, v in times.items()},
        }
        for clock, column in (("wall", 0), ("cpu", 1)):
            per_step = {k: np.array(v)[:, :, column] for k, v in times.items()}  # rounds x steps
            plain_m, probed_m = float(np.median(per_step["plain"])), float(np.median(per_step["probed"]))
            per_round = np.median(per_step["probed"], 1) / np.median(per_step["plain"], 1)
            row[f"plain_step_{clock}_seconds"] = plain_m
            row[f"probed_step_{clock}_seconds"] = probed_m
            row[f"overhead_{clock}_ratio_of_medians"] = probed_m / plain_m - 1
            row[f"overhead_{clock}_median_of_round_ratios"] = float(np.median(per_round)) - 1
        row["probe_cpu_seconds_per_step"] = float(np.median(probe_part))
        row["overhead_cpu_within_step"] = float(np.median(within))
        row["classifier_cpu_seconds_per_step"] = float(np.median(spent))
        row["classifier_share_of_plain_step"] = row["classifier_cpu_seconds_per_step"] / row["plain_step_cpu_seconds"]
        rows.append(row)
        print(
            f"  {len(atoms)} atoms: plain {1000 * row['plain_step_cpu_seconds']:.1f} ms CPU; probe "
            f"{100 * row['overhead_cpu_within_step']:+.1f} % within the step, A/B "
            f"{100 * row['overhead_cpu_ratio_of_medians']:+.1f} % CPU / {100 * row['overhead_wall_ratio_of_medians']:+.1f} % "
            f"wall; classifier {1000 * row['classifier_cpu_seconds_per_step']:.2f} ms CPU",
            flush=True,
        )
    return rows
