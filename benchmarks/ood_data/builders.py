"""The seven out-of-distribution sets, as geometries only (``labelling`` labels them with
xTB after): a bond stretched, an atom pulled off, fragments, dimers, the whole molecule
compressed or stretched, hot xTB MD, and other C/H/O molecules. ``BUILDERS`` maps each
kind to its builder, ``builder(rng) -> frames``."""

from __future__ import annotations

import numpy as np

from benchmarks.ood_data.geometry import (
    bonds_of,
    ethanol_roles,
    min_distance,
    ood_sources,
    random_rotation,
    random_unit,
    read_source,
    substitute,
)
from benchmarks.ood_data.xtb import multiplicity_of, relaxed, xtb_md


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
