"""What a probe adds to one MD step of each plugin's ASE calculator (issue 18).

For each backbone importable in this environment: the same model as a plain calculator
and with ``probe=``; replicated ethanol molecules (9 to ~1000 atoms, no cell); each step
moves the atoms a little and asks for forces, as MD does. The overhead is measured two ways, in the
process's CPU time (on a shared machine wall time also counts other processes' turns):
within each probed step, the time outside the wrapped calculator's own pass over that pass
(paired: the load cancels); and end to end, plain and probed steps in interleaved rounds
inside one process (A B, B A, ...), the ratio of the median step times minus one.

Four probes run, each in its own process:

``before``                   the code before the speed work with its probe (self-attention);
``after, self``              this tree's code, the same probe file (the fused inference path);
``after, pooling``           this tree's code, the network of the linear-time pooling
                             architecture alone (no domain test, no per-atom error head);
``after, pooling + domain``  the same with ``probe fit``'s defaults: the domain test
                             (per-atom k-NN novelty) and the per-atom force-error head.

    python -m benchmarks step-cost                     # every backbone importable here
    python -m benchmarks step-cost --backbones mace --molecules 1 11 111

The models have the benchmark suite's architectures (``benchmarks/backbones/<backbone>.py``):
the suite's trained seed 1 if cached, else one trained for one or two epochs (the cost of a
step does not depend on how long a model was trained); SevenNet-0 is sevenn's bundled
checkpoint. Probes are fitted on 100 labelled ethanol structures of the shared test set.
Writes ``benchmarks/results/step_cost_<backbone>.{json,md,png}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import speed
from benchmarks.backbones import seed_model_path
from benchmarks.common import CACHE, ETHANOL_HELDOUT, REPO, RESULTS
from benchmarks.report import write_markdown

TIMING = CACHE / "timing"  # models trained briefly when the suite's are not cached
BACKBONES = ("mace", "sevenn", "nequip", "aimnet")
SHORT_TRAINING = {
    "mace": ["--epochs", "2"],
    "nequip": ["--epochs", "1", "--max-minutes", "5"],
    "aimnet": ["--epochs", "1"],
}


def importable(backbone) -> bool:
    from importlib.util import find_spec

    return (
        find_spec(f"probe_{backbone}") is not None
        and find_spec({"mace": "mace", "sevenn": "sevenn", "nequip": "nequip", "aimnet": "aimnet"}[backbone])
        is not None
    )


def timing_model(backbone) -> str:
    """The suite's seed-1 model if cached, else one of the same architecture trained briefly."""
    if backbone == "sevenn":
        return "7net-0"
    suite = seed_model_path(backbone, "ethanol", 1)
    if suite.exists():
        return str(suite)
    short = seed_model_path(backbone, "ethanol", 1, cache=TIMING / backbone)
    if not short.exists():
        cmd = [
            sys.executable,
            "-m",
            "benchmarks",
            "train",
            backbone,
            "--datasets",
            "ethanol",
            "--seeds",
            "1",
            "--no-evaluate",
            "--cache",
            str(TIMING / backbone),
            *SHORT_TRAINING[backbone],
        ]
        print("training a timing model:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return str(short)


def calculators(backbone, model, probe):
    """(plain, probed) ASE calculators on the same model file."""
    if backbone == "mace":
        from mace.calculators import MACECalculator as Plain
        from probe_mace import MACECalculator

        dtype = "float64" if "float64" in str(_mace_dtype(model)) else "float32"
        options = dict(model_paths=[model], device="cpu", default_dtype=dtype)
        return Plain(**options), MACECalculator(**options, probe=probe, probe_policy="ignore")
    if backbone == "sevenn":
        from probe_sevenn import SevenNetCalculator
        from sevenn.calculator import SevenNetCalculator as Plain

        return Plain(model, device="cpu"), SevenNetCalculator(model, device="cpu", probe=probe, probe_policy="ignore")
    if backbone == "nequip":
        from probe_nequip import NequIPCalculator

        return (
            NequIPCalculator.from_saved_model(model, device="cpu"),
            NequIPCalculator.from_saved_model(model, device="cpu", probe=probe, probe_policy="ignore"),
        )
    from probe_aimnet import AIMNet2ASE

    return AIMNet2ASE(model), AIMNet2ASE(model, probe=probe, probe_policy="ignore")


def _mace_dtype(model):
    import torch

    return {p.dtype for p in torch.load(model, map_location="cpu", weights_only=False).parameters()}


def replicated_ethanol(n_molecules, spacing=6.0):
    """``n_molecules`` ethanol molecules on a cubic grid (no periodic cell)."""
    import ase.io
    from ase import Atoms

    molecule = ase.io.read(ETHANOL_HELDOUT, 0)
    side = int(np.ceil(n_molecules ** (1 / 3)))
    shifts = [spacing * np.array([k % side, (k // side) % side, k // side**2]) for k in range(n_molecules)]
    centred = molecule.positions - molecule.positions.mean(0)
    return Atoms(
        numbers=np.tile(molecule.numbers, n_molecules), positions=np.concatenate([centred + s for s in shifts])
    )


# ---- in a worker process (the code tree under test first on sys.path) ----------------------
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


def timing_probes(backbone, model, before=None, after=None) -> dict:
    """The self-attention probe (fitted by the code before the speed work, so that both
    codes load it) and the pooling probe (this code) of ``model``, fitted once."""
    folder = TIMING / "probes" / backbone
    folder.mkdir(parents=True, exist_ok=True)
    probes = {
        "self": folder / "self.probe",
        "pooling": folder / "pooling.probe",
        "pooling + domain": folder / "pooling_domain.probe",
    }
    if not probes["self"].exists():
        in_tree(
            before or speed.code_tree(speed.BEFORE_SPEED_WORK),
            backbone,
            "fit_probe",
            backbone=backbone,
            model=model,
            output=str(probes["self"]),
        )
    for name, domain in (("pooling", False), ("pooling + domain", True)):
        if not probes[name].exists():
            in_tree(
                after or REPO,
                backbone,
                "fit_probe",
                backbone=backbone,
                model=model,
                output=str(probes[name]),
                attention="pooling",
                domain=domain,
            )
    return probes


WORKER = """
import json, sys
sys.path.append({repo!r})
from benchmarks import step_cost
kind, args = sys.argv[1], json.loads(sys.argv[2])
result = getattr(step_cost, kind)(**args)
print("RESULT " + json.dumps(result))
"""


def in_tree(tree, plugin, kind, **kwargs):
    """Run ``kind(**kwargs)`` of this module in a process importing ``tree``'s probe_base."""
    env = speed.environment(tree, plugins=[plugin])
    result = subprocess.run(
        [sys.executable, "-c", WORKER.format(repo=str(REPO)), kind, json.dumps(kwargs)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
    )
    sys.stdout.write("".join(line + "\n" for line in result.stdout.splitlines() if not line.startswith("RESULT ")))
    if result.returncode:
        raise SystemExit(f"{kind} ({plugin}, {tree}) failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.split("RESULT ", 1)[1])


def step_cost(args) -> dict:
    backbones = args.backbones or [b for b in BACKBONES if importable(b)]
    if not backbones:
        raise SystemExit("no backbone plugin importable in this environment")
    trees = {"before": speed.code_tree(args.baseline), "after": speed.code_tree(args.after)}
    payloads = {}
    for backbone in backbones:
        model = timing_model(backbone)
        probes = timing_probes(backbone, model, trees["before"], trees["after"])
        runs = {}
        for label, tree, probe in (
            ("before", "before", "self"),
            ("after, self", "after", "self"),
            ("after, pooling", "after", "pooling"),
            ("after, pooling + domain", "after", "pooling + domain"),
        ):
            print(f"{backbone}: {label}", flush=True)
            runs[label] = in_tree(
                trees[tree],
                backbone,
                "measure_steps",
                backbone=backbone,
                model=model,
                probe=str(probes[probe]),
                molecules=args.molecules,
                rounds=args.rounds,
            )
        payload = {
            "backbone": backbone,
            "model": model,
            "baseline": args.baseline,
            "command": f"python -m benchmarks step-cost --backbones {backbone}",
            "threads": 1,
            "load_average": os.getloadavg(),
            "runs": runs,
        }
        (RESULTS / f"step_cost_{backbone}.json").write_text(json.dumps(payload, indent=1))
        write_report(payload)
        payloads[backbone] = payload
    return payloads


def write_report(payload):
    backbone = payload["backbone"]
    runs = payload["runs"]
    lines = [
        f"# Probe cost per MD step: {backbone} ({Path(payload['model']).name}), 1 thread",
        "",
        f"`{payload['command']}`. Overhead = CPU time of a probed step outside the wrapped "
        "calculator's own pass, over that pass, in the same step (median over steps: paired, so "
        "the shared machine's load cancels); in brackets the end-to-end A/B: plain and probed "
        "calculator in interleaved rounds in one process, ratio of median CPU step times - 1 "
        "(noisier: two sets of steps). Plain step = median CPU time of the plain calculator.",
        "",
        "| atoms | plain step (ms CPU) | " + " | ".join(f"{k}" for k in runs) + " |",
        "|---" * (2 + len(runs)) + "|",
    ]
    first = next(iter(runs.values()))
    for i, row in enumerate(first):
        cells = [f"{row['atoms']}", f"{1000 * row['plain_step_cpu_seconds']:.1f}"]
        cells += [
            (f"{100 * r[i]['overhead_cpu_within_step']:+.1f} % " if "overhead_cpu_within_step" in r[i] else "")
            + f"({100 * r[i]['overhead_cpu_ratio_of_medians']:+.1f} %)"
            for r in runs.values()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    write_markdown(RESULTS / f"step_cost_{backbone}.md", "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for label, rows in runs.items():
        atoms = [r["atoms"] for r in rows]
        axes[0].semilogx(
            atoms,
            [100 * r.get("overhead_cpu_within_step", r["overhead_cpu_ratio_of_medians"]) for r in rows],
            "o-",
            label=label,
        )
        axes[1].loglog(atoms, [1000 * r["classifier_cpu_seconds_per_step"] for r in rows], "o-", label=label)
    axes[1].loglog(atoms, [1000 * r["plain_step_cpu_seconds"] for r in first], "k--", label="plain step")
    axes[0].axhline(2, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="atoms", ylabel="probe overhead per step (%, CPU, within step)", title=backbone)
    axes[1].set(xlabel="atoms", ylabel="ms CPU per step", title="probe scoring call per step")
    axes[0].legend(fontsize=8), axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"step_cost_{backbone}.png", dpi=120)
    plt.close(fig)


def register(sub):
    s = sub.add_parser("step-cost", help="per-MD-step overhead of each plugin's calculator with probe=")
    s.add_argument(
        "--backbones", nargs="+", choices=BACKBONES, default=None, help="default: every backbone importable here"
    )
    s.add_argument(
        "--molecules", nargs="+", type=int, default=[1, 11, 111], help="ethanol molecules per structure (9 atoms each)"
    )
    s.add_argument("--rounds", type=int, default=7)
    s.add_argument("--baseline", default=speed.BEFORE_SPEED_WORK)
    s.add_argument("--after", default=None, help="git ref to compare (default: the working tree)")
    s.set_defaults(handler=step_cost)
