"""The ethanol geometries the OOD sets start from and the geometry tools the builders
share: covalent bonds, random directions and rotations, the chemical role of each ethanol
atom, and an H replaced by an OH or CH3 group."""

from __future__ import annotations

import numpy as np

from benchmarks.common import DATA
from benchmarks.ood_data.layout import N_HELDOUT


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
