"""Stage ``label``: every set of the OOD benchmark, built and labelled with xTB once and
cached as extxyz under ``data/`` (a finished file is never recomputed), with the count of
frames xTB failed on in ``data/labels.json``; and the xTB isolated-atom energies the
backbones take as reference energies."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO
from benchmarks.ood_data.builders import BUILDERS
from benchmarks.ood_data.geometry import read_source
from benchmarks.ood_data.layout import ATOM_MULTIPLICITY, ISOLATED, LABELS, N_HELDOUT
from benchmarks.ood_data.summary import update_summary
from benchmarks.ood_data.xtb import label, xtb_calculator


def write_frames(path: Path, frames) -> None:
    import ase.io

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    ase.io.write(partial, frames, format="extxyz")
    os.replace(partial, path)  # atomic: a set in the cache is always complete


def stage_label() -> dict:
    """Every labelled set (cached); returns the data-set record (also data/labels.json)."""
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    record_path = LABELS / "labels.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if not ISOLATED.exists():
        frames = []
        for symbol, multiplicity in ATOM_MULTIPLICITY.items():
            atom = Atoms(symbol, positions=[[0.0, 0.0, 0.0]])
            atom.calc = xtb_calculator(multiplicity)
            energy = atom.get_potential_energy()
            atom.calc = SinglePointCalculator(atom, energy=float(energy), forces=np.zeros((1, 3)))
            atom.info = {"config_type": "IsolatedAtom", "multiplicity": multiplicity}
            frames.append(atom)
        write_frames(ISOLATED, frames)
    record["isolated_atom_energies_eV"] = {
        a.get_chemical_symbols()[0]: a.get_potential_energy() for a in ase.io.read(ISOLATED, ":")
    }
    record["isolated_atom_multiplicity"] = ATOM_MULTIPLICITY
    jobs = {
        "train": lambda rng: read_source("train.xyz"),
        "heldout": lambda rng: read_source("test_MD.xyz", f":{N_HELDOUT}"),
        **{f"ood_{kind}": builder for kind, builder in BUILDERS.items()},
    }
    sets = record.setdefault("sets", {})
    for k, (name, build) in enumerate(jobs.items()):
        path = LABELS / f"{name}.xyz"
        if not path.exists():
            started = time.perf_counter()
            rng = np.random.default_rng(1000 + k)  # one fixed stream per set: reproducible
            labelled, failed = label(build(rng), name)
            write_frames(path, labelled)
            sets[name] = {"n_failed": failed, "label_seconds": time.perf_counter() - started}
        frames = ase.io.read(path, ":")
        sizes = [len(a) for a in frames]
        sets.setdefault(name, {}).update(
            {
                "path": str(path.relative_to(REPO)),
                "n_structures": len(frames),
                "atoms_min": min(sizes),
                "atoms_max": max(sizes),
            }
        )
        if name.startswith("ood_"):
            groups = {}
            for a in frames:
                key = next(
                    (
                        str(a.info[g])
                        for g in ("bond", "pulled_element", "fragment", "molecule", "md_temperature_K")
                        if g in a.info
                    ),
                    None,
                )
                if key is not None:
                    groups[key] = groups.get(key, 0) + 1
            if groups:
                sets[name]["groups"] = groups
        print(
            f"{name}: {len(frames)} structures, {min(sizes)}-{max(sizes)} atoms, "
            f"{sets[name].get('n_failed', '?')} dropped (xTB failed)",
            flush=True,
        )
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=1))
    update_summary({"data": record})
    return record


def stage_isolated() -> dict[str, float]:
    import ase.io

    return {a.get_chemical_symbols()[0]: float(a.get_potential_energy()) for a in ase.io.read(ISOLATED, ":")}
