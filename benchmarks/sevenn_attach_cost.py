"""SevenNet-0 with PROBE attached: time per structure for a molecule and a periodic
crystal, plain calculator vs ``probe_base.attach`` (same backbone pass + the probe).

    python -m benchmarks sevenn-attach-cost   # needs the probe of `python -m benchmarks sevenn-signal`

Writes benchmarks/results/sevenn_attach_cost.json. Times are the minimum over repeats
(each repeat moves the atoms so the calculator really recomputes), one thread.
"""

import json
import time

import numpy as np

from benchmarks.common import CACHE, ETHANOL_HELDOUT, RESULTS

PROBE = CACHE / "stores" / "sevenn_ethanol_raw.probe"  # fitted by `python -m benchmarks sevenn-signal`


def per_structure_seconds(atoms, calc, repeats=7):
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(0)
    atoms.get_forces()  # warm-up
    best = np.inf
    for _ in range(repeats):
        atoms.positions += rng.normal(0, 1e-3, atoms.positions.shape)
        t0 = time.perf_counter()
        atoms.get_forces()
        best = min(best, time.perf_counter() - t0)
    return best, atoms.calc.results


def attach_cost(args):
    import ase.io
    import torch
    from ase.build import bulk
    from probe_sevenn import SevenNetCalculator

    from probe_base import attach

    torch.set_num_threads(1)
    structures = {
        "ethanol (9 atoms)": ase.io.read(ETHANOL_HELDOUT, 0),
        "NaCl rock salt 3x3x3 (54 atoms, periodic)": bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((3, 3, 2))[
            :54
        ],
    }
    out = {}
    for name, atoms in structures.items():
        plain_calc = SevenNetCalculator("7net-0", device="cpu")
        probed_calc = attach(SevenNetCalculator("7net-0", device="cpu"), PROBE, policy="ignore")
        plain, _ = per_structure_seconds(atoms, plain_calc)
        probed, results = per_structure_seconds(atoms, probed_calc)
        out[name] = {
            "n_atoms": len(atoms),
            "plain_seconds": plain,
            "with_probe_seconds": probed,
            "probe_overhead_ratio": probed / plain - 1.0,
            "reliability": results["reliability"],
            "importance_sum": float(np.sum(results["atom_importance"])),
        }
        print(
            f"{name}: plain {1000 * plain:.1f} ms, with PROBE {1000 * probed:.1f} ms "
            f"(overhead {100 * (probed / plain - 1):+.1f} %), P(reliable) {results['reliability']:.3f}"
        )
    (RESULTS / "sevenn_attach_cost.json").write_text(json.dumps(out, indent=1))
    return 0


def register(sub):
    sub.add_parser(
        "sevenn-attach-cost", help="SevenNet-0 per-structure time, plain vs probe attached (probe-sevenn's environment)"
    ).set_defaults(handler=attach_cost)
