"""``probe md --engine torchsim``: the structures of a file as one TorchSim batch with the
MACE model and its probe; exit 0 when the run ends, 3 when the stop policy ended it (the
untrusted frame written for labelling), 2 with one line when an option is missing."""

from __future__ import annotations

import ase.io
import pytest
from ase.build import molecule

from probe_base.cli import main


@pytest.fixture
def batch(tmp_path):
    path = tmp_path / "batch.xyz"
    ase.io.write(path, [molecule("CH3CH2OH"), molecule("CH3CH2OH")])
    return path


def md(model_paths, probe, *extra):
    return [
        "md",
        "--engine",
        "torchsim",
        "--adapter",
        "mace",
        "--model",
        str(model_paths[0]),
        "--probe",
        str(probe),
        *extra,
    ]


def test_a_batch_runs_to_the_end_and_a_strict_probe_stops_it(model_paths, probe_file, batch, tmp_path, capsys):
    paths, _, _ = probe_file
    args = md(model_paths, paths["plain"], "--structures", str(batch), "--steps", "3", "--seed", "0")
    assert main(args + ["--policy", "ignore"]) == 0
    assert "probe md: 2 systems, 3 steps, 4 scored" in capsys.readouterr().out
    collect = tmp_path / "to_label.xyz"
    strict = md(model_paths, paths["strict"], "--structures", str(batch), "--steps", "3", "--policy", "stop")
    assert main(strict + ["--collect", str(collect)]) == 3
    out = capsys.readouterr().out
    assert "stopped at step 0" in out
    frames = ase.io.read(collect, ":")
    assert {f.info["probe_system"] for f in frames} == {0, 1} and all(f.info["probe_step"] == 0 for f in frames)


def test_missing_options_and_another_adapter_are_one_line(model_paths, probe_file, batch, capsys):
    paths, _, _ = probe_file
    assert main(md(model_paths, paths["plain"], "--structures", str(batch))) == 2
    assert "probe md --engine torchsim needs --steps" in capsys.readouterr().err
    args = md(model_paths, paths["plain"], "--structures", str(batch), "--steps", "2")
    args[args.index("mace")] = "toy"
    assert main(args) == 2
    assert "runs MACE models (--adapter mace), not 'toy'" in capsys.readouterr().err
    assert main(["md", "--adapter", "mace", "--model", str(model_paths[0]), "--probe", str(paths["plain"])]) == 2
    assert "probe md --engine lammps needs --in, --elements" in capsys.readouterr().err
