"""``step-cost``'s run: per backbone its model and timing probes, each of the four probes
timed in a worker process importing its code tree (``worker``), then the result files
(``page``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.common import REPO, RESULTS
from benchmarks.speed.compare import BEFORE_SPEED_WORK, code_tree, environment
from benchmarks.step_cost.models import BACKBONES, TIMING, importable, timing_model
from benchmarks.step_cost.page import write_report


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
            before or code_tree(BEFORE_SPEED_WORK),
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


# runs this repository's benchmarks (appended to sys.path: a ref's code tree has none) against
# the tree's probe_base
WORKER = """
import json, sys
sys.path.append({repo!r})
from benchmarks.step_cost import worker
kind, args = sys.argv[1], json.loads(sys.argv[2])
result = getattr(worker, kind)(**args)
print("RESULT " + json.dumps(result))
"""


def in_tree(tree, plugin, kind, **kwargs):
    """Run ``kind(**kwargs)`` of ``worker`` in a process importing ``tree``'s probe_base."""
    env = environment(tree, plugins=[plugin])
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
    trees = {"before": code_tree(args.baseline), "after": code_tree(args.after)}
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
