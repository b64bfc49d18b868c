"""The MACE ensemble of ``probe demo``: small ScaleShiftMACE models trained with mace's own
``mace_run_train`` on EMT-labelled copper clusters (``probe_base.demo.demo_data``).

Each member is trained the way users train MACE: ``mace_run_train`` in a subprocess,
ScaleShiftMACE, 16 channels, max_L 0, max_ell 2, correlation 3, 2 interactions, r_max 4.5,
E0s = EMT's isolated Cu atom, EMA, 15 epochs (lr 0.02, energy weight 20) of which the last
7 are a stage-two (SWA) phase with a higher energy weight so that energies converge, not
only forces (about 5 meV/atom energy MAE on the training distribution, 15 meV/atom on the
demo's hotter, strained, vacancy-bearing held-out clusters). Members differ only by
``--seed`` (initialisation and the train/validation split). One member takes about a
minute on one CPU thread.

The package ships four pre-trained members (``example_models/member{k}.model``, seeds
0..3), so that ``probe demo`` needs no training. They were regenerated with

    OMP_NUM_THREADS=1 python -m probe_mace.example --output-dir probe_mace/example_models

run in ``probe_plugins/mace`` (trains on exactly ``probe_base.demo.demo_data``'s training
set, members 0..3, then prints each member's held-out errors on the demo's held-out set).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

EXAMPLE_FOLDER = "example_models"  # package data of probe_mace
SHIPPED_MEMBERS = 4

# one member ~1 min on one CPU thread (160 clusters of 12-38 atoms)
SETTINGS = {
    "num_channels": 16,
    "max_L": 0,
    "num_interactions": 2,
    "correlation": 3,
    "max_ell": 2,
    "radial_MLP": "[32, 32]",
    "r_max": 4.5,
    "batch_size": 8,
    "lr": 0.02,
    "energy_weight": 20,
    "epochs": 15,
    "start_swa": 8,
    "swa_lr": 0.003,
    "valid_fraction": 0.1,
}


def cu_e0() -> float:
    """EMT energy of an isolated Cu atom (the E0 the models are trained with)."""
    from ase import Atoms
    from ase.calculators.emt import EMT

    return float(Atoms("Cu", calculator=EMT()).get_potential_energy())


def train_command(
    train_file: Path, seed: int, work: Path, name: str, settings: dict, e0s: dict[int, float]
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mace.cli.run_train",  # = the `mace_run_train` script
        f"--name={name}",
        f"--seed={seed}",
        f"--train_file={train_file}",
        f"--valid_fraction={settings['valid_fraction']}",
        "--energy_key=energy",  # mace reads ASE's SinglePointCalculator for these keys
        "--forces_key=forces",
        f"--E0s={e0s!r}",
        "--model=ScaleShiftMACE",
        f"--num_channels={settings['num_channels']}",
        f"--max_L={settings['max_L']}",
        f"--num_interactions={settings['num_interactions']}",
        f"--correlation={settings['correlation']}",
        f"--max_ell={settings['max_ell']}",
        f"--radial_MLP={settings['radial_MLP']}",
        f"--r_max={settings['r_max']}",
        f"--batch_size={settings['batch_size']}",
        "--valid_batch_size=32",
        f"--lr={settings['lr']}",
        f"--energy_weight={settings['energy_weight']}",
        "--forces_weight=100",
        f"--max_num_epochs={settings['epochs']}",
        "--swa",
        f"--start_swa={settings['start_swa']}",
        f"--swa_lr={settings['swa_lr']}",
        "--swa_energy_weight=1000",
        "--swa_forces_weight=100",
        "--ema",
        "--ema_decay=0.99",
        "--amsgrad",
        "--default_dtype=float32",
        "--device=cpu",
        "--save_cpu",
        f"--work_dir={work}",
        f"--model_dir={work}",
    ]


def train_member(train_file, target, seed: int, threads: int = 1, progress: bool = True, **overrides) -> Path:
    """Train one member on ``train_file`` with ``mace_run_train`` and write it to ``target``
    (atomically: a file at ``target`` is always a complete model). ``overrides`` replace
    entries of ``SETTINGS`` (e.g. ``epochs=5``)."""
    train_file, target = Path(train_file).resolve(), Path(target).resolve()
    settings = {**SETTINGS, **overrides}
    target.parent.mkdir(parents=True, exist_ok=True)
    name = f"member{seed}"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    started = time.time()
    with tempfile.TemporaryDirectory(prefix=f"mace-{name}-", dir=target.parent) as tmp:
        work = Path(tmp)
        cmd = train_command(train_file, seed, work, name, settings, {29: cu_e0()})
        if progress:
            print(f"  mace_run_train: {name} (seed {seed}, {settings['epochs']} epochs)", flush=True)
        with open(work / "mace_run_train.out", "w") as out:
            rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)
        produced = work / f"{name}_stagetwo.model"
        if rc != 0 or not produced.exists():
            log = (work / "mace_run_train.out").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"mace_run_train failed (rc {rc}) for {name}:\n{log}")
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(produced, partial)
        os.replace(partial, target)
    if progress:
        print(f"  {name}: done in {time.time() - started:.0f} s -> {target}", flush=True)
    return target


def shipped_model(k: int) -> Path | None:
    """The packaged pre-trained member ``k`` (None when it is not shipped)."""
    resource = resources.files("probe_mace") / EXAMPLE_FOLDER / f"member{k}.model"
    return Path(str(resource)) if resource.is_file() else None


def example_models(train_file, workdir, n_members: int, retrain: bool = False, threads: int = 1) -> list[Path]:
    """``n_members`` member files in ``workdir``: the shipped ones copied (unless
    ``retrain``), the others trained on ``train_file`` with seeds ``k = 0, 1, ...``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n_members):
        target = workdir / f"member{k}.model"
        shipped = None if retrain else shipped_model(k)
        if shipped is not None:
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(shipped, partial)
            os.replace(partial, target)
        elif retrain or not target.exists():
            train_member(train_file, target, seed=k, threads=threads)
        paths.append(target)
    return paths


def member_errors(model_path, structures) -> dict:
    """Energy (meV/atom) and force (meV/A) MAE of one member on ``structures``, with mace's
    own ASE calculator (what a user would check it with)."""
    import numpy as np
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype="float64")
    e_err, f_err = [], []
    for atoms in structures:
        copy = atoms.copy()
        copy.calc = calc
        e_err.append(abs(copy.get_potential_energy() - atoms.get_potential_energy()) / len(atoms))
        f_err.append((copy.get_forces() - atoms.get_forces()).ravel())
    return {
        "energy_mae_meV_per_atom": float(np.mean(e_err) * 1e3),
        "forces_mae_meV_per_A": float(np.mean(np.abs(np.concatenate(f_err))) * 1e3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train the members of probe demo's MACE ensemble on the demo's data.")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--members", type=int, default=SHIPPED_MEMBERS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    parser.add_argument("--start-swa", type=int, default=SETTINGS["start_swa"])
    args = parser.parse_args(argv)

    import ase.io
    import torch

    from probe_base.demo import demo_data

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="probe-demo-data-") as tmp:
        data = demo_data(Path(tmp))
        paths = [
            train_member(
                data["train"],
                args.output_dir / f"member{k}.model",
                seed=k,
                threads=args.threads,
                epochs=args.epochs,
                start_swa=args.start_swa,
            )
            for k in range(args.members)
        ]
        train, heldout = ase.io.read(data["train"], ":"), ase.io.read(data["heldout"], ":")
        for path in paths:
            print(
                f"{path.name} ({path.stat().st_size / 1024:.0f} KiB): "
                f"train {member_errors(path, train)}, held-out {member_errors(path, heldout)}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
