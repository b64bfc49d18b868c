"""Data and backbones for the out-of-distribution (OOD) benchmark, with real GFN2-xTB labels.

Three stages, each cached (a finished file is never recomputed):

1. ``label`` (any environment with tblite and ASE): GFN2-xTB (tblite) energies and forces
   of the 1000 ethanol geometries of ``ethanol/train.xyz`` (the backbones' training set),
   500 of ``ethanol/test_MD.xyz`` (in distribution) and seven OOD sets built from ethanol
   geometries (test_MD frames 500-999, never in the held-out set): ``bond_scan``,
   ``atom_pulled``, ``fragments``, ``dimer``, ``compressed_stretched``, ``hot`` (xTB
   Langevin MD at 1500-2500 K) and ``other_molecules`` (methanol from test_eth_meth.xyz and
   other C/H/O molecules). Also the xTB isolated-atom energies (H doublet, C and O
   triplets), the backbones' reference energies. Frames where xTB fails are dropped and
   counted in ``data/labels.json``.
2. ``train`` (the backbone's environment): 4 seeds of a small backbone with the
   framework's own trainer (``mace_run_train``, ``nequip-train``, ``aimnet train``) via
   the hooks of ``benchmarks/backbones/<backbone>.py``, on ``train.xyz`` with the xTB isolated-atom
   energies as reference energies, two single-thread trainings at a time, ~3.5 min each.
3. ``extract`` (the backbone's environment): ``probe_base.store.extract`` of every set, seed 1
   probed and seeds 1-4 the ensemble (as ``benchmarks/suite.py``), then per store the
   backbone's energy MAE and force RMSE (seed 1 vs xTB) and the median ensemble energy std,
   printed and merged into ``summary.json``.

    python -m benchmarks ood-data --backbone mace --stage all
    python -m benchmarks ood-data --backbone nequip --stage train
    python -m benchmarks ood-data --backbone aimnet --stage extract

(``python -m benchmarks.ood_data ...``, the spelling results/ood.md quotes, runs the same command.)

Layout under ``benchmarks/cache/ood/``: ``data/{train,heldout,ood_<kind>}.xyz`` and
``data/isolated_atoms.xyz``; ``models/<backbone>/seed{1..4}.<ext>``;
``stores/<backbone>_<set>.h5``; ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from argparse import Namespace
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.common import BACKBONES, CACHE, DATA, REPO

OOD = CACHE / "ood"
LABELS = OOD / "data"
MODELS = OOD / "models"
STORES = OOD / "stores"
SUMMARY = OOD / "summary.json"

TRAIN = LABELS / "train.xyz"
ISOLATED = LABELS / "isolated_atoms.xyz"
N_HELDOUT = 500
OOD_KINDS = ("bond_scan", "atom_pulled", "fragments", "dimer", "compressed_stretched", "hot", "other_molecules")
SETS = ("train", "heldout", *(f"ood_{kind}" for kind in OOD_KINDS))
# ground-state spin multiplicities of the free atoms (GFN2-xTB, no spin polarisation)
ATOM_MULTIPLICITY = {"H": 2, "C": 3, "O": 3}
SEEDS = (1, 2, 3, 4)
TRAIN_MINUTES = 3.5
# mace_run_train has no wall-time cap: epochs sized to the cap. Measured: ~80 s per epoch
# (900 ethanol structures, 32 channels, L=0, one thread on a loaded 2-core machine), so 4
# epochs, the last one the high-energy-weight stage two (SWA)
MACE_EPOCHS, MACE_START_SWA = 4, 3


# ---- xTB ------------------------------------------------------------------------------------
def xtb_calculator(multiplicity: int = 1, charge: int = 0):
    """A GFN2-xTB calculator (tblite), quiet."""
    try:
        from tblite.ase import TBLite
    except ImportError as error:
        raise SystemExit(
            f"tblite is missing ({error}): `{sys.executable} -m pip install tblite` (GFN2-xTB labels need it)"
        ) from error
    return TBLite(method="GFN2-xTB", charge=charge, multiplicity=multiplicity, verbosity=0)


def multiplicity_of(atoms) -> int:
    """Lowest spin multiplicity of a neutral structure: doublet for an odd electron count
    (radical fragments), singlet otherwise; ``info['multiplicity']`` overrides."""
    if "multiplicity" in atoms.info:
        return int(atoms.info["multiplicity"])
    return 2 if int(atoms.numbers.sum()) % 2 else 1


def label(frames, desc: str):
    """xTB energy and forces of each frame, as a SinglePointCalculator (what ase writes as
    ``energy=`` and the ``forces`` column). Returns (labelled, number that failed)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from tqdm import tqdm

    labelled, failed = [], 0
    for atoms in tqdm(frames, desc=f"xTB {desc}", unit="structure", disable=None):
        clean = Atoms(numbers=atoms.numbers, positions=atoms.positions)
        clean.info.update({k: v for k, v in atoms.info.items() if k not in ("energy", "forces")})
        clean.info["multiplicity"] = multiplicity_of(atoms)
        clean.calc = xtb_calculator(clean.info["multiplicity"])
        try:
            energy, forces = clean.get_potential_energy(), clean.get_forces()
        except Exception:  # noqa: BLE001 - SCF not converged (ase CalculationFailed): dropped
            failed += 1
            continue
        if not (np.isfinite(energy) and np.isfinite(forces).all()):
            failed += 1
            continue
        clean.calc = SinglePointCalculator(clean, energy=float(energy), forces=forces)
        labelled.append(clean)
    return labelled, failed


def write_frames(path: Path, frames) -> None:
    import ase.io

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    ase.io.write(partial, frames, format="extxyz")
    os.replace(partial, path)  # atomic: a set in the cache is always complete


def read_source(name: str, index=":"):
    import ase.io

    return ase.io.read(DATA / "ethanol" / name, index)


def ood_sources():
    """Ethanol geometries the OOD sets start from: test_MD frames never in the held-out set."""
    return read_source("test_MD.xyz", f"{N_HELDOUT}:")


def bonds_of(atoms):
    """Covalent bonds (i < j) by ASE's natural cutoffs."""
    from ase.neighborlist import natural_cutoffs, neighbor_list

    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.1))
    return sorted({(int(a), int(b)) for a, b in zip(i, j) if a < b})


def random_unit(rng):
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def random_rotation(rng):
    q = rng.normal(size=4)
    a, b, c, d = q / np.linalg.norm(q)
    return np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
        ]
    )


def min_distance(atoms, subset=None):
    from scipy.spatial.distance import pdist

    return float(pdist(atoms.positions if subset is None else atoms.positions[subset]).min())


# ---- ethanol topology -------------------------------------------------------------------------
def ethanol_roles(atoms):
    """Indices by chemical role: methyl C, methylene C, O, hydroxyl H, methyl Hs, methylene Hs."""
    symbols = atoms.get_chemical_symbols()
    o = symbols.index("O")
    carbons = [k for k, s in enumerate(symbols) if s == "C"]
    # by distance, not bond cutoffs: hot rMD17 geometries stretch bonds past them
    c_oh = min(carbons, key=lambda c: atoms.get_distance(c, o))
    c_me = next(c for c in carbons if c != c_oh)
    hydrogens = [k for k, s in enumerate(symbols) if s == "H"]
    nearest = lambda h: min((c_me, c_oh, o), key=lambda x: atoms.get_distance(h, x))  # noqa: E731
    roles = {
        "C_methyl": c_me,
        "C_methylene": c_oh,
        "O": o,
        "H_hydroxyl": [h for h in hydrogens if nearest(h) == o],
        "H_methyl": [h for h in hydrogens if nearest(h) == c_me],
        "H_methylene": [h for h in hydrogens if nearest(h) == c_oh],
    }
    if (len(roles["H_hydroxyl"]), len(roles["H_methyl"]), len(roles["H_methylene"])) != (1, 3, 2):
        return None  # a distorted geometry: skip it as a source
    return roles


# ---- OOD builders (geometries only; labels come after) -----------------------------------------
def build_bond_scan(rng, n_per_bond=30):
    """One bond (C-C, C-O, O-H or a C-H) stretched to 1.4-3x its length by moving the
    fragment on one side of it along the bond axis."""
    sources = ood_sources()
    frames = []
    for bond_name in ("C-C", "C-O", "O-H", "C-H"):
        for _ in range(n_per_bond):
            atoms = sources[rng.integers(len(sources))].copy()
            roles = ethanol_roles(atoms)
            if roles is None:
                continue
            a, b = {
                "C-C": (roles["C_methylene"], roles["C_methyl"]),
                "C-O": (roles["C_methylene"], roles["O"]),
                "O-H": (roles["O"], roles["H_hydroxyl"][0]),
                "C-H": (roles["C_methyl"], int(rng.choice(roles["H_methyl"] + roles["H_methylene"]))),
            }[bond_name]
            if bond_name == "C-H" and b in roles["H_methylene"]:
                a = roles["C_methylene"]
            # the fragment beyond the bond: CH3, OH, or the H alone
            moving = {"C-C": [roles["C_methyl"], *roles["H_methyl"]], "C-O": [roles["O"], *roles["H_hydroxyl"]]}.get(
                bond_name, [b]
            )
            vector = atoms.positions[b] - atoms.positions[a]
            length = np.linalg.norm(vector)
            factor = rng.uniform(1.4, 3.0)
            atoms.positions[moving] += (factor - 1) * vector
            atoms.calc = None
            atoms.info = {
                "ood_kind": "bond_scan",
                "bond": bond_name,
                "stretch_factor": float(factor),
                "bond_length": float(factor * length),
            }
            frames.append(atoms)
    return frames


def build_atom_pulled(rng, n=120, h_fraction=0.8):
    """One atom (80 % H, else C or O) pulled 1-4 A away from its bonded partner, in a
    random direction on the far side (nothing else closer than 0.8 A)."""
    sources = ood_sources()
    frames = []
    while len(frames) < n:
        atoms = sources[rng.integers(len(sources))].copy()
        symbols = atoms.get_chemical_symbols()
        pull_hydrogen = rng.random() < h_fraction
        pool = [k for k, s in enumerate(symbols) if (s == "H") == pull_hydrogen]
        atom = int(rng.choice(pool))
        partners = [b if a == atom else a for a, b in bonds_of(atoms) if atom in (a, b)]
        if not partners:
            continue
        partner = min(partners, key=lambda p: atoms.get_distance(atom, p))
        away = atoms.positions[atom] - atoms.positions[partner]
        away /= np.linalg.norm(away)
        direction = random_unit(rng)
        if direction @ away < 0:  # away from the partner, not through it
            direction -= 2 * (direction @ away) * away
        distance = rng.uniform(1.0, 4.0)
        atoms.positions[atom] += distance * direction
        if min_distance(atoms) < 0.8:
            continue
        atoms.calc = None
        atoms.info = {
            "ood_kind": "atom_pulled",
            "pulled_element": symbols[atom],
            "pulled_by": float(distance),
            "distance_to_partner": float(atoms.get_distance(atom, partner)),
        }
        frames.append(atoms)
    return frames


# fragment name -> roles it keeps (cut from one ethanol geometry; radicals are doublets)
FRAGMENTS = {
    "CH3": ("C_methyl", "H_methyl"),
    "CH2OH": ("C_methylene", "H_methylene", "O", "H_hydroxyl"),
    "OH": ("O", "H_hydroxyl"),
    "C2H5": ("C_methyl", "H_methyl", "C_methylene", "H_methylene"),
    "CH3CH2O": ("C_methyl", "H_methyl", "C_methylene", "H_methylene", "O"),
    "CH2O": ("C_methylene", "H_methylene", "O"),  # formaldehyde-like, closed shell
    "C2H4": ("C_methyl", "H_methyl-1", "C_methylene", "H_methylene"),  # ethylene-like, closed shell
    "H2O": ("O", "H_hydroxyl", "H_methylene-nearest"),  # water-like, closed shell
}


def build_fragments(rng, n_per_fragment=15):
    """Subsets of ethanol atoms cut from geometries; odd electron counts get doublets."""
    sources = ood_sources()
    frames = []
    for name, keep in FRAGMENTS.items():
        for _ in range(n_per_fragment):
            atoms = sources[rng.integers(len(sources))]
            roles = ethanol_roles(atoms)
            if roles is None:
                continue
            indices = []
            for role in keep:
                if role == "H_methyl-1":  # two of the three methyl Hs
                    indices += list(rng.choice(roles["H_methyl"], 2, replace=False))
                elif role == "H_methylene-nearest":  # the methylene H closest to O
                    indices.append(min(roles["H_methylene"], key=lambda h: atoms.get_distance(h, roles["O"])))
                else:
                    value = roles[role]
                    indices += value if isinstance(value, list) else [value]
            fragment = atoms[sorted(int(k) for k in indices)]
            fragment.calc = None
            fragment.info = {"ood_kind": "fragments", "fragment": name}
            fragment.info["multiplicity"] = multiplicity_of(fragment)
            frames.append(fragment)
    return frames


def build_dimer(rng, n=100):
    """Two ethanol molecules, randomly oriented, closest intermolecular atoms 2.5-5 A apart."""
    from ase import Atoms

    sources = ood_sources()
    frames = []
    for _ in range(n):
        first = sources[rng.integers(len(sources))]
        second = sources[rng.integers(len(sources))]
        a = first.positions - first.positions.mean(0)
        b = (second.positions - second.positions.mean(0)) @ random_rotation(rng).T
        direction = random_unit(rng)
        gap = rng.uniform(2.5, 5.0)
        low, high = 0.0, 20.0  # centroid separation giving the wanted closest contact
        for _ in range(60):
            mid = (low + high) / 2
            contact = np.linalg.norm(a[:, None] - (b + mid * direction)[None], axis=-1).min()
            low, high = (mid, high) if contact < gap else (low, mid)
        dimer = Atoms(numbers=np.r_[first.numbers, second.numbers], positions=np.r_[a, b + high * direction])
        dimer.info = {"ood_kind": "dimer", "closest_contact": float(gap)}
        frames.append(dimer)
    return frames


def build_compressed_stretched(rng, n=100):
    """All coordinates scaled about the centroid by 0.8-0.9 (half) or 1.1-1.25 (half)."""
    sources = ood_sources()
    frames = []
    for k in range(n):
        atoms = sources[rng.integers(len(sources))].copy()
        factor = rng.uniform(0.8, 0.9) if k % 2 == 0 else rng.uniform(1.1, 1.25)
        centroid = atoms.positions.mean(0)
        atoms.positions = centroid + factor * (atoms.positions - centroid)
        atoms.calc = None
        atoms.info = {"ood_kind": "compressed_stretched", "scale": float(factor)}
        frames.append(atoms)
    return frames


def xtb_md(atoms, temperature_K, n_frames, spacing, warmup, rng, timestep_fs=0.5, friction_per_fs=0.02):
    """Langevin MD with the xTB calculator; a frame every ``spacing`` steps after ``warmup``
    steps. Stops early (keeping the frames so far) if xTB fails."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = atoms.copy()
    atoms.calc = xtb_calculator(multiplicity_of(atoms))
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    Stationary(atoms)
    dynamics = Langevin(
        atoms,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        rng=rng,
    )
    frames = []
    try:
        dynamics.run(warmup)
        for _ in range(n_frames):
            dynamics.run(spacing)
            frame = atoms.copy()
            frame.calc = None
            frame.info = {"md_temperature_K": float(temperature_K), "md_time_fs": float(dynamics.nsteps * timestep_fs)}
            frames.append(frame)
    except Exception as error:  # noqa: BLE001 - xTB failed mid-trajectory: keep what we have
        print(f"MD at {temperature_K} K stopped after {len(frames)} frames: {error}", flush=True)
    return frames


def build_hot(rng, temperatures=(1500, 1750, 2000, 2250, 2500), n_per_temperature=24):
    """Ethanol from xTB Langevin MD at 1500-2500 K, frames 20 steps (10 fs) apart."""
    from tqdm import tqdm

    sources = ood_sources()
    frames = []
    for temperature in tqdm(temperatures, desc="hot MD", unit="trajectory", disable=None):
        start = sources[rng.integers(len(sources))]
        for frame in xtb_md(start, temperature, n_per_temperature, spacing=20, warmup=100, rng=rng):
            frame.info["ood_kind"] = "hot"
            frames.append(frame)
    return frames


def substitute(atoms, hydrogen, group):
    """Replace one H by an OH or CH3 group (bond lengths 1.43 / 1.53 A along the old C-H
    direction, the group's Hs tetrahedral): hand-built molecules, relaxed with xTB after."""
    from ase import Atoms

    parent = min(
        (k for k in range(len(atoms)) if k != hydrogen and atoms[k].symbol != "H"),
        key=lambda k: atoms.get_distance(hydrogen, k),
    )
    u = atoms.positions[hydrogen] - atoms.positions[parent]
    u /= np.linalg.norm(u)
    heavy, length, h_length, n_h = {"OH": ("O", 1.43, 0.97, 1), "CH3": ("C", 1.53, 1.09, 3)}[group]
    center = atoms.positions[parent] + length * u
    v = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
    v /= np.linalg.norm(v)
    w = np.cross(u, v)
    theta = np.radians(180 - 109.5)  # angle of each new X-H to the continued bond axis
    hs = [
        center + h_length * (np.cos(theta) * u + np.sin(theta) * (np.cos(phi) * v + np.sin(phi) * w))
        for phi in np.radians([0, 120, 240][:n_h])
    ]
    keep = [k for k in range(len(atoms)) if k != hydrogen]
    return Atoms(
        symbols=[atoms[k].symbol for k in keep] + [heavy] + ["H"] * n_h,
        positions=np.r_[atoms.positions[keep], [center], hs],
    )


def relaxed(atoms, fmax=0.05, steps=200):
    from ase.optimize import BFGS

    atoms = atoms.copy()
    atoms.calc = xtb_calculator(multiplicity_of(atoms))
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    atoms.calc = None
    return atoms


def build_other_molecules(rng, n_methanol=40, n_per_molecule=15):
    """Same elements, other molecules: methanol (test_eth_meth.xyz) and, from ase.build or
    built by hand and xTB-relaxed, short 500 K xTB MD of dimethyl ether, acetaldehyde,
    isopropanol, methyl ethyl ether, acetic acid, ethylene oxide, ethylene glycol, 1-propanol."""
    from ase.build import molecule
    from tqdm import tqdm

    methanol = [a for a in read_source("test_eth_meth.xyz") if a.info.get("config_type") == "methanol"]
    frames = []
    for k in rng.choice(len(methanol), n_methanol, replace=False):
        atoms = methanol[int(k)].copy()
        atoms.calc = None
        atoms.info = {"ood_kind": "other_molecules", "molecule": "methanol"}
        frames.append(atoms)
    ethanol = molecule("CH3CH2OH")
    methyl_h = ethanol_roles(ethanol)["H_methyl"][0]
    start = {
        name: molecule(g2)
        for name, g2 in (
            ("dimethyl ether", "CH3OCH3"),
            ("acetaldehyde", "CH3CHO"),
            ("isopropanol", "C2H6CHOH"),
            ("methyl ethyl ether", "CH3CH2OCH3"),
            ("acetic acid", "CH3COOH"),
            ("ethylene oxide", "CH2OCH2"),
        )
    }
    start["ethylene glycol"] = substitute(ethanol, methyl_h, "OH")
    start["1-propanol"] = substitute(ethanol, methyl_h, "CH3")
    for name, atoms in tqdm(start.items(), desc="other molecules MD", unit="molecule", disable=None):
        for frame in xtb_md(relaxed(atoms), 500, n_per_molecule, spacing=20, warmup=100, rng=rng):
            frame.info.update({"ood_kind": "other_molecules", "molecule": name})
            frames.append(frame)
    return frames


BUILDERS = {
    "bond_scan": build_bond_scan,
    "atom_pulled": build_atom_pulled,
    "fragments": build_fragments,
    "dimer": build_dimer,
    "compressed_stretched": build_compressed_stretched,
    "hot": build_hot,
    "other_molecules": build_other_molecules,
}


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


# ---- backbones -------------------------------------------------------------------------------
def model_path(backbone: str, seed: int) -> Path:
    """models/<backbone>/seed<k>.<ext>: the trainers' layout for a dataset named after the
    backbone (``register_dataset``) in the cache folder ``MODELS``."""
    from benchmarks.backbones import seed_model_path

    return seed_model_path(backbone, backbone, seed, cache=MODELS)


def register_dataset(module, backbone: str, spec: dict) -> str:
    """Make the xTB training set a dataset of ``benchmarks/backbones/<backbone>.py``: named
    after the backbone, with ``cache=MODELS`` its models land in models/<backbone>/ (the
    trainers read ``data / spec[...]``; absolute paths win over ``data``)."""
    module.DATASETS[backbone] = spec
    return backbone


def train_seed(backbone: str, seed: int, minutes: float) -> Path | None:
    """One seed with the framework's own trainer, through the backbone's training hooks."""
    import logging

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    MODELS.mkdir(parents=True, exist_ok=True)
    common = dict(cache=MODELS, size="small", epochs=None, data=Path("/"), device="cpu", threads=1)
    if backbone == "mace":
        from benchmarks.backbones import mace as trainer

        name = register_dataset(
            trainer,
            backbone,
            {
                "train": str(TRAIN),
                "isolated": str(ISOLATED),
                "valid_fraction": 0.1,
                "epochs": MACE_EPOCHS,
                "start_swa": MACE_START_SWA,
            },
        )
        return trainer.train_one(name, seed, Namespace(**common, dtype="float32"))
    if backbone == "nequip":
        from benchmarks.backbones import nequip as trainer

        name = register_dataset(
            trainer, backbone, {"train": str(TRAIN), "isolated": str(ISOLATED), "split": (900, 100), "max_epochs": 40}
        )
        # Lightning's max_time covers the epochs; startup and packaging add ~0.5 min
        return trainer.train_one(name, seed, Namespace(**common, max_minutes=minutes - 0.5))
    if backbone == "aimnet":
        return train_aimnet_seed(seed, minutes)
    raise ValueError(backbone)


def aimnet_sae(frames) -> dict[int, float]:
    """AIMNet2's self-atomic energies: the xTB isolated-atom energies plus one per-atom shift
    common to all elements, the mean per-atom (E - sum of isolated-atom energies) of the
    training set. aimnet's own linear regression is undetermined on one composition (C2H6O:
    any split of the molecule's energy among H, C and O fits), and without the shift the
    network would first have to learn a ~-5 eV/atom offset. The same reference as
    ScaleShiftMACE's (E0s + the mean per-atom interaction energy)."""
    from ase.data import atomic_numbers

    isolated = {atomic_numbers[s]: e for s, e in stage_isolated().items()}
    shift = float(np.mean([(a.get_potential_energy() - sum(isolated[z] for z in a.numbers)) / len(a) for a in frames]))
    return {int(z): float(e + shift) for z, e in sorted(isolated.items())}


def train_aimnet_seed(seed: int, minutes: float) -> Path | None:
    """aimnet's chain as ``benchmarks/backbones/aimnet.py`` runs it (its ethanol settings,
    split and small model), except the SAE (``aimnet_sae``)."""
    import ase.io
    from probe_aimnet import training

    from benchmarks.backbones import aimnet

    target = model_path("aimnet", seed)
    if target.exists():
        print(f"aimnet seed {seed}: {target} exists, skipping", flush=True)
        return target
    spec = aimnet.DATASETS["ethanol"]  # the suite's ethanol settings
    work = target.parent / "work" / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    train_frames, valid_frames = aimnet.split(ase.io.read(TRAIN, ":"), spec["valid_fraction"], seed)
    started = time.time()
    try:
        train_h5 = training.write_dataset(train_frames, work / "train.h5")
        val_h5 = training.write_dataset(valid_frames, work / "val.h5")
        sae = work / "sae.yaml"
        sae.write_text("".join(f"{z}: {e!r}\n" for z, e in aimnet_sae(train_frames).items()))
        weights = work / "weights.pt"
        model_cfg = aimnet.model_config("small")
        training.train(
            model_cfg,
            training.train_config(
                train_h5,
                val_h5,
                sae,
                work,
                spec["epochs"],
                batch_size=spec["batch_size"],
                lr=spec["lr"],
                forces_weight=spec["forces_weight"],
            ),
            weights,
            seed,
            work,
            minutes * 60,
        )
        training.export(weights, model_cfg, sae, target, work)
    except Exception:  # noqa: BLE001 - reported; the other seeds still train
        import traceback

        traceback.print_exc()
        print(f"aimnet seed {seed}: training failed after {(time.time() - started) / 60:.1f} min", flush=True)
        return None
    print(f"aimnet seed {seed}: done in {(time.time() - started) / 60:.1f} min -> {target}", flush=True)
    return target


def stage_isolated() -> dict[str, float]:
    import ase.io

    return {a.get_chemical_symbols()[0]: float(a.get_potential_energy()) for a in ase.io.read(ISOLATED, ":")}


def stage_train(backbone: str, seeds, parallel: int, minutes: float) -> list[Path]:
    """Every missing seed, ``parallel`` single-thread trainings at a time, each in a process
    of its own (aimnet trains in process)."""
    from concurrent.futures import ThreadPoolExecutor

    if not TRAIN.exists() or not ISOLATED.exists():
        raise SystemExit(f"{TRAIN} or {ISOLATED} missing: run --stage label first")
    missing = [s for s in seeds if not model_path(backbone, s).exists()]
    started = time.perf_counter()
    if len(missing) == 1 or parallel == 1:
        for seed in missing:
            train_seed(backbone, seed, minutes)
    elif missing:
        log_dir = MODELS / backbone
        log_dir.mkdir(parents=True, exist_ok=True)

        def one(seed):
            cmd = [
                sys.executable,
                "-m",
                "benchmarks",
                "ood-data",
                "--backbone",
                backbone,
                "--stage",
                "train",
                "--seeds",
                str(seed),
                "--parallel",
                "1",
                "--minutes",
                str(minutes),
            ]
            with open(log_dir / f"train_seed{seed}.log", "a") as out:
                return subprocess.call(
                    cmd,
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"),
                )

        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, missing))
    found = [model_path(backbone, s) for s in seeds if model_path(backbone, s).exists()]
    failed = [s for s in seeds if not model_path(backbone, s).exists()]
    print(
        f"{backbone}: {len(found)} models in {MODELS / backbone}"
        + (f"; seeds {failed} FAILED (logs in {MODELS / backbone})" if failed else "")
        + (f" ({(time.perf_counter() - started) / 60:.1f} min)" if missing else ""),
        flush=True,
    )
    if missing:
        update_summary(
            {
                "backbones": {
                    backbone: {
                        "training_wall_minutes": (time.perf_counter() - started) / 60,
                        "train_minutes_cap": minutes,
                        "failed_seeds": failed,
                    }
                }
            }
        )
    return found


# ---- stores ----------------------------------------------------------------------------------
def store_figures(store: Path) -> dict:
    """Seed 1 vs xTB, and the ensemble's energy spread, from one store."""
    from probe_base.store import load_store

    data = load_store(store)
    error = data.energy_pred - data.energy_ref
    figures = {
        "n_structures": len(data),
        "energy_mae_meV": 1000 * float(np.mean(np.abs(error))),
        "energy_mean_signed_error_meV": 1000 * float(np.mean(error)),
        # as benchmarks/suite.py: sqrt of the mean squared per-structure force RMSE
        "force_rmse_meV_per_A": 1000 * float(np.sqrt(np.nanmean(data.force_rmse**2))),
    }
    if data.member_energies is not None:
        std = data.member_energies.std(axis=1)
        figures["ensemble_energy_std_median_meV"] = 1000 * float(np.median(std))
        figures["n_members"] = int(data.member_energies.shape[1])
        figures["member_energy_mae_meV"] = [
            1000 * float(np.mean(np.abs(m - data.energy_ref))) for m in data.member_energies.T
        ]
    return figures


def stage_extract(backbone: str, sets=SETS) -> dict:
    import torch

    from probe_base.plugins import get_adapter_class
    from probe_base.store import extract

    torch.set_num_threads(1)
    models = [model_path(backbone, s) for s in SEEDS if model_path(backbone, s).exists()]
    if len(models) < 2:
        raise SystemExit(f"{backbone}: need >= 2 trained seeds in {MODELS / backbone}, found {len(models)}")
    adapter_class = get_adapter_class(backbone)
    # as benchmarks/suite.py: every feature layer; the first model probed, all the ensemble
    layers = [layer.name for layer in adapter_class(models[:1]).feature_layers()]
    adapter = adapter_class(models, layers=layers)
    figures = {}
    for name in sets:
        source = LABELS / f"{name}.xyz"
        if not source.exists():
            print(f"{name}: {source} missing (run --stage label), skipped", flush=True)
            continue
        store = STORES / f"{backbone}_{name}.h5"
        started = time.perf_counter()
        extract(adapter, source, store)
        figures[name] = {"store": str(store.relative_to(REPO)), **store_figures(store)}
        if time.perf_counter() - started > 1:
            figures[name]["extract_seconds"] = time.perf_counter() - started
        f = figures[name]
        print(
            f"{backbone} {name:28s} n={f['n_structures']:5d}  E MAE {f['energy_mae_meV']:9.1f} meV  "
            f"F RMSE {f['force_rmse_meV_per_A']:8.1f} meV/A  ensemble E std median "
            f"{f.get('ensemble_energy_std_median_meV', float('nan')):8.1f} meV",
            flush=True,
        )
        update_summary(
            {
                "stores": {backbone: {name: figures[name]}},
                "backbones": {backbone: {"models": [str(m.relative_to(REPO)) for m in models], "layers": layers}},
            }
        )
    return figures


# ---- summary ---------------------------------------------------------------------------------
def _merge(into: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


@contextmanager
def _locked(path: Path):
    """Several backbones' environments may update summary.json at once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_summary(update: dict) -> None:
    with _locked(SUMMARY):
        summary = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
        _merge(summary, update)
        partial = SUMMARY.with_name(SUMMARY.name + ".partial")
        partial.write_text(json.dumps(summary, indent=1, default=float))
        os.replace(partial, SUMMARY)


def ood_data(args) -> int:
    # one thread: small models and xTB on a shared 2-core machine (tblite and torch load in
    # the stages, after this)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    if args.stage != "label" and not args.backbone:
        raise SystemExit(f"ood-data: --stage {args.stage} needs --backbone")
    if args.stage in ("label", "all"):
        stage_label()
    if args.stage in ("train", "all"):
        found = stage_train(args.backbone, args.seeds, args.parallel, args.minutes)
        if args.stage == "train" and len(args.seeds) == 1:  # a child of stage_train
            return 0 if found else 1
    if args.stage in ("extract", "all"):
        stage_extract(args.backbone, args.sets)
    return 0


def register(sub) -> None:
    parser = sub.add_parser(
        "ood-data",
        help="the OOD benchmark's xTB data, backbones and feature stores",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backbone", choices=BACKBONES, help="needed by the train and extract stages")
    parser.add_argument("--stage", choices=("label", "train", "extract", "all"), default="all")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--parallel", type=int, default=2, help="trainings at once (single-thread each)")
    parser.add_argument("--minutes", type=float, default=TRAIN_MINUTES, help="wall-time cap per training")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), help="stores to extract")
    parser.set_defaults(handler=ood_data)


if __name__ == "__main__":  # results/ood.md quotes `python -m benchmarks.ood_data ...`
    from benchmarks.__main__ import main

    sys.exit(main(["ood-data", *sys.argv[1:]]))
