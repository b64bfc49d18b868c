"""The toy workload of ``evaluate-speed`` (and of ``attention``): EMT clusters read by a
3-member toy backbone into a store, and a probe fitted on it by the baseline code."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.speed.compare import BEFORE_SPEED_WORK, SPEED_CACHE, code_tree, environment, timed


def toy_store(n_structures: int, with_probe=True) -> tuple[Path, Path | None]:
    """A store of ``n_structures`` EMT clusters read by a 3-member toy backbone, and a
    probe fitted on half of it by the baseline code (so both versions can load it)."""
    import ase.io

    from probe_base import toy
    from probe_base.store import extract

    folder = SPEED_CACHE / f"toy_{n_structures}"
    folder.mkdir(parents=True, exist_ok=True)
    models = []
    train = None
    for seed in range(3):
        path = folder / f"toy{seed}.pt"
        if not path.exists():
            train = train or toy.emt_clusters(120, seed=0, rattle=(0.02, 0.08))
            toy.save_model(
                toy.train(
                    train,
                    [a.get_potential_energy() for a in train],
                    [a.get_forces() for a in train],
                    seed=seed,
                    epochs=25,
                ),
                path,
            )
        models.append(path)
    store = folder / "store.h5"
    if not store.exists():
        heldout = folder / "structures.xyz"
        ase.io.write(
            heldout,
            toy.emt_clusters(n_structures, seed=1, rattle=(0.02, 0.2), vacancy_fraction=0.3, strain=(0.97, 1.03)),
        )
        extract(toy.ToyAdapter(models), heldout, store, progress=False)
    probe = folder / "toy.probe"
    if not with_probe:
        return store, None
    if not probe.exists():
        print(f"fitting the probe on {n_structures // 2} structures (baseline code)", flush=True)
        timed(
            [
                sys.executable,
                "-m",
                "probe_base.cli",
                "fit",
                "--store",
                str(store),
                "--output",
                str(probe),
                "--eval-fraction",
                "0.5",
                "--epochs",
                "30",
            ],
            environment(code_tree(BEFORE_SPEED_WORK)),
            cwd=code_tree(BEFORE_SPEED_WORK),
        )
    return store, probe
