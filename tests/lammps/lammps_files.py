"""LAMMPS data and dump files for the tests of tests/lammps (their fixtures are in
tests/conftest.py: one conftest module in the core suite, so ``from conftest import`` means
one file)."""

import numpy as np


def write_data(path, atoms, elements, velocities=None, shuffle=False, margin=15.0):
    """A LAMMPS data file (atom_style atomic, metal units) of ``atoms``: their own cell
    when periodic (it must be lower-triangular, LAMMPS's form), else a box ``margin`` Å
    around them. ``velocities`` in Å/ps. ``shuffle``: atom lines out of id order, so that
    LAMMPS's local order differs from the ids."""
    from ase.data import atomic_masses, atomic_numbers

    n = len(atoms)
    if atoms.pbc.any():
        cell = atoms.cell.array
        assert np.allclose(cell[np.triu_indices(3, 1)], 0), "LAMMPS needs a lower-triangular cell"
        lo = np.zeros(3)
        hi = np.diag(cell)
        tilt = (cell[1, 0], cell[2, 0], cell[2, 1])  # xy xz yz
    else:
        lo = atoms.positions.min(axis=0) - margin
        hi = atoms.positions.max(axis=0) + margin
        tilt = None
    lines = ["LAMMPS data file written by tests/lammps", "", f"{n} atoms", f"{len(elements)} atom types", ""]
    lines += [f"{float(lo[k]):.17g} {float(hi[k]):.17g} {axis}lo {axis}hi" for k, axis in enumerate("xyz")]
    if tilt is not None:
        lines.append(f"{float(tilt[0]):.17g} {float(tilt[1]):.17g} {float(tilt[2]):.17g} xy xz yz")
    lines += ["", "Masses", ""]
    lines += [f"{t + 1} {float(atomic_masses[atomic_numbers[e]]):.17g}" for t, e in enumerate(elements)]
    order = np.random.default_rng(0).permutation(n) if shuffle else np.arange(n)
    types = {e: t + 1 for t, e in enumerate(elements)}
    symbols = atoms.get_chemical_symbols()
    lines += ["", "Atoms # atomic", ""]
    lines += [
        f"{i + 1} {types[symbols[i]]} {float(x):.17g} {float(y):.17g} {float(z):.17g}"
        for i in order
        for x, y, z in [atoms.positions[i]]
    ]
    if velocities is not None:
        lines += ["", "Velocities", ""]
        lines += [
            f"{i + 1} {float(vx):.17g} {float(vy):.17g} {float(vz):.17g}"
            for i in order
            for vx, vy, vz in [velocities[i]]
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_dump(path):
    """{step: {column: array sorted by id}} of a `dump custom` text file."""
    frames, lines, i = {}, path.read_text().splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("ITEM: TIMESTEP"):
            step = int(lines[i + 1])
            n = int(lines[i + 3])
            header = lines[i + 8].split()[2:]
            values = np.array([[float(v) for v in row.split()] for row in lines[i + 9 : i + 9 + n]])
            values = values[np.argsort(values[:, header.index("id")])]
            frames[step] = {name: values[:, k] for k, name in enumerate(header)}
            i += 9 + n
        else:
            i += 1
    return frames
