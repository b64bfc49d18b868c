"""The MD watchdog (probe_base.integrations.watchdog) on real Langevin dynamics of the toy backbone."""

from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
import torch
from ase import units
from ase.md.langevin import Langevin

from probe_base.errors import UnreliablePrediction
from probe_base.integrations.watchdog import (
    ReliabilityWatchdog,
    UnreliableTrajectory,
    UnreliableTrajectoryWarning,
)

torch.set_num_threads(1)

try:
    import practice_toy  # the tiny trained backbone + probe shared by the practice tests
except ImportError:  # tests/ imported as a package
    from tests import practice_toy


@pytest.fixture(scope="module")
def toy():
    return practice_toy.toy_probe()


def md(toy, policy="ignore", temperature_K=300, seed=0):
    """A fresh cluster with the probed toy calculator and its (seeded) dynamics."""
    from probe_base.integrations.calculator import attach
    from probe_base.toy import ToyCalculator

    atoms = toy["train_set"][0].copy()
    atoms.calc = attach(ToyCalculator(toy["model"]), toy["probe"], policy=policy)
    dyn = Langevin(
        atoms, 2 * units.fs, temperature_K=temperature_K, friction=0.05, fixcm=False, rng=np.random.default_rng(seed)
    )
    return atoms, dyn


def test_records_every_step_and_annotates_the_trajectory(toy, tmp_path):
    atoms, dyn = md(toy)
    watchdog = ReliabilityWatchdog(atoms, patience=3, action="stop", threshold=-1.0)  # never unreliable
    dyn.attach(watchdog, interval=1)
    trajectory = tmp_path / "md.xyz"
    dyn.attach(lambda: ase.io.write(trajectory, atoms, format="extxyz", append=True), interval=1)
    dyn.run(12)
    assert list(watchdog.steps) == list(range(13))
    p = watchdog.reliabilities
    assert np.all((p >= 0) & (p <= 1)) and np.ptp(p) > 0  # the structure moves, P changes
    for record in watchdog.records:
        assert record.importance.shape == (len(atoms),)
        assert record.importance.sum() == pytest.approx(1.0, abs=1e-5)
    assert atoms.info["probe_reliability"] == pytest.approx(p[-1])
    frames = ase.io.read(trajectory, ":")
    assert len(frames) == 13
    assert [f.info["probe_reliability"] for f in frames] == pytest.approx(list(p), abs=1e-6)
    assert np.allclose(frames[-1].arrays["probe_importance"], watchdog.records[-1].importance, atol=1e-6)
    assert watchdog.events == [] and watchdog.summary()["unreliable_fraction"] == 0.0


def test_stop_names_the_step_and_the_atoms(toy):
    atoms, dyn = md(toy)
    watchdog = ReliabilityWatchdog(atoms, patience=4, action="stop", threshold=1.01)
    dyn.attach(watchdog, interval=1)
    with pytest.raises(UnreliableTrajectory) as caught:
        dyn.run(40)
    error = caught.value
    assert isinstance(error, UnreliablePrediction)
    assert error.step == 3 and dyn.nsteps == 3  # steps 0, 1, 2, 3 unreliable: stopped there
    importance = watchdog.records[-1].importance
    top = int(np.argmax(importance))
    assert error.top_atoms[0][0] == top and error.top_atoms[0][2] == pytest.approx(importance[top])
    symbols = atoms.get_chemical_symbols()
    assert f"{symbols[top]}{top}" in str(error) and "step 3" in str(error)
    assert np.allclose(error.atom_importance, importance)
    assert [s for s, _ in error.history] == [0, 1, 2, 3]


def test_stop_saves_the_frames_that_ended_the_run(toy, tmp_path):
    path = tmp_path / "stopped.xyz"
    atoms, dyn = md(toy)
    watchdog = ReliabilityWatchdog(atoms, patience=4, action="stop", threshold=1.01, collect_path=path)
    dyn.attach(watchdog, interval=1)
    with pytest.raises(UnreliableTrajectory, match="frames saved to"):
        dyn.run(40)
    frames = ase.io.read(path, ":")
    assert [f.info["probe_step"] for f in frames] == [0, 1, 2, 3]
    assert np.allclose(frames[-1].positions, atoms.positions)  # the frame it stopped at
    assert frames[-1].info["probe_reliability"] == pytest.approx(watchdog.records[-1].reliability)
    assert watchdog.events[0]["collected"] == 4 and watchdog.n_collected == 4


def test_trigger_matches_the_recorded_reliabilities(toy):
    """With a threshold inside the observed range, the stop comes exactly at the end of the
    first run of `patience` unreliable steps of the same (seeded) trajectory."""
    atoms, dyn = md(toy, temperature_K=1500)
    probe_run = ReliabilityWatchdog(atoms, threshold=-1.0)
    dyn.attach(probe_run, interval=1)
    dyn.run(30)
    p = probe_run.reliabilities
    threshold = float(np.quantile(p, 0.6))
    patience = 2
    below = p < threshold
    expected = next(i for i in range(patience - 1, len(p)) if below[i - patience + 1 : i + 1].all())

    atoms, dyn = md(toy, temperature_K=1500)
    watchdog = ReliabilityWatchdog(atoms, patience=patience, action="stop", threshold=threshold, dynamics=dyn)
    dyn.attach(watchdog, interval=1)
    with pytest.raises(UnreliableTrajectory) as caught:
        dyn.run(30)
    assert caught.value.step == expected
    assert watchdog.reliabilities == pytest.approx(p[: expected + 1], abs=1e-6)


def test_warn_once_per_unreliable_stretch(toy):
    atoms, dyn = md(toy)
    watchdog = ReliabilityWatchdog(atoms, patience=3, action="warn", threshold=1.01)
    dyn.attach(watchdog, interval=1)
    with pytest.warns(UnreliableTrajectoryWarning, match="step 2") as record:
        dyn.run(8)
    assert len([w for w in record if w.category is UnreliableTrajectoryWarning]) == 1
    assert len(watchdog.records) == 9 and len(watchdog.events) == 1  # the run went on


def test_collect_appends_offending_frames(toy, tmp_path):
    path = tmp_path / "to_label.xyz"
    atoms, dyn = md(toy)
    watchdog = ReliabilityWatchdog(atoms, patience=3, action="collect", collect_path=path, threshold=1.01, interval=2)
    dyn.attach(watchdog, interval=2)  # numbered with interval=: steps 0, 2, 4, ...
    dyn.run(10)
    frames = ase.io.read(path, ":")
    # 6 calls (steps 0..10 by 2); triggered at the 3rd, then every further unreliable frame
    assert [f.info["probe_step"] for f in frames] == [0, 2, 4, 6, 8, 10]
    assert watchdog.n_collected == 6
    for frame, record in zip(frames, watchdog.records):
        assert frame.info["probe_reliability"] == pytest.approx(record.reliability)
        assert np.allclose(frame.arrays["probe_importance"], record.importance, atol=1e-6)
        assert frame.calc is None or "energy" not in frame.calc.results  # no MLIP "labels"


def test_calculator_instead_of_atoms_and_policy_warning(toy):
    from probe_base.integrations.calculator import attach
    from probe_base.toy import ToyCalculator

    atoms, dyn = md(toy)
    watchdog = ReliabilityWatchdog(atoms.calc, patience=2, action="stop", threshold=1.01)
    dyn.attach(watchdog, interval=1)
    with pytest.raises(UnreliableTrajectory):
        dyn.run(5)
    assert len(watchdog.records) == 2

    with pytest.warns(UserWarning, match="policy='ignore'"):
        ReliabilityWatchdog(attach(ToyCalculator(toy["model"]), toy["probe"], policy="warn"))
    with pytest.raises(TypeError, match="probe_base.attach"):
        ReliabilityWatchdog(ToyCalculator(toy["model"]))
    with pytest.raises(ValueError, match="collect_path"):
        ReliabilityWatchdog(atoms, action="collect")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ReliabilityWatchdog(atoms)  # policy ignore: no warning
