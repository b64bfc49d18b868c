"""Issue 29: the commands' options and messages. Ctrl-C or SIGTERM during extract leaves a
resumable store and one line saying so; numeric options are checked with their range; calibrate
needs --output or --overwrite, writes nothing when no threshold meets the target, and its rule
flags alike in predict, select and the calculator; minor messages name the real fix."""

import os
import signal
import subprocess
import sys
import time

import ase.io
import pytest
from safety_helpers import predict, run_cli, write_frames

from probe_base import attach
from probe_base.artifact import load_probe
from probe_base.cli import main
from probe_base.store import extract, load_store
from probe_base.toy import ToyCalculator


# ---- 3. Ctrl-C and SIGTERM during extract ---------------------------------------------------
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_extract_says_what_was_saved_and_resumes(toy_files, tmp_path, signum, status):
    frames = ase.io.read(toy_files["heldout"], ":") * 16  # 6400 structures: ~15 s of work on a quiet machine
    source = write_frames(tmp_path / "many.xyz", frames)
    output = tmp_path / "many.h5"
    command = [
        sys.executable,
        "-m",
        "probe_base.cli",
        "--threads",
        "1",
        "extract",
        "--adapter",
        "probe_base.toy:ToyAdapter",
    ]
    command += ["--model", str(toy_files["models"][0]), "--input", str(source), "--output", str(output)]
    command += ["--batch-size", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT as a terminal delivers it: a runner started in the background (`cmd &`) ignores
    # SIGINT, the child would inherit that and Python would never raise KeyboardInterrupt
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    partial = tmp_path / "many.h5.partial"
    deadline = time.time() + 120
    while not partial.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(2.0)  # past the first flushed chunk (256 structures), well before the last
    assert process.poll() is None, "the extraction ended before it could be interrupted"
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == status, err[-2000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and str(partial) in lines[0] and "run the same command again to resume" in lines[0]
    assert partial.exists() and not output.exists()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(load_store(output)) == len(frames)


# ---- 4, 5. numeric options ------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--threads", "-2", "plugins"], "argument --threads: -2 is out of range: must be >= 1"),
        (["--threads", "0", "plugins"], "argument --threads: 0 is out of range: must be >= 1"),
        (["extract", "--batch-size", "0"], "argument --batch-size: 0 is out of range: must be >= 1"),
        (["extract", "--batch-size", "-5"], "argument --batch-size: -5 is out of range: must be >= 1"),
        (["select", "--n", "0"], "argument --n: 0 is out of range: must be >= 1"),
        (["fit", "--false-alarm", "1.5"], "argument --false-alarm: 1.5 is out of range: must be > 0 and < 1"),
        (["fit", "--eval-fraction", "1"], "argument --eval-fraction: 1 is out of range: must be >= 0 and < 1"),
        (["fit", "--threshold", "nan"], "argument --threshold: nan is out of range: must be > 0"),
        (["calibrate", "--target-risk", "x"], "argument --target-risk: 'x' is not a number in (0, 1)"),
    ],
)
def test_numeric_options_are_checked_with_their_range(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err


# ---- 6. calibrate writes a new file, or nothing when no threshold meets the target ---------
def test_calibrate_needs_output_or_overwrite_and_writes_nothing_when_unmet(
    fitted_probe, heldout_store, tmp_path, capsys
):
    probe = tmp_path / "p.probe"
    probe.write_bytes(fitted_probe.read_bytes())
    before = probe.read_bytes()
    code, error = run_cli(capsys, "calibrate", "--probe", probe, "--store", heldout_store, "--target-risk", "0.1")
    assert code == 2 and "--output NEW.probe" in error and "--overwrite" in error
    code, error = run_cli(
        capsys,
        "calibrate",
        "--probe",
        probe,
        "--store",
        heldout_store,
        "--target-risk",
        "0.0001",
        "--output",
        tmp_path / "c.probe",
    )
    assert code == 2 and "no threshold meets the target" in error and "nothing written" in error
    assert probe.read_bytes() == before and not (tmp_path / "c.probe").exists()
    code, _ = run_cli(
        capsys, "calibrate", "--probe", probe, "--store", heldout_store, "--target-risk", "0.4", "--overwrite"
    )
    assert code == 0
    calibrated = load_probe(probe)
    assert calibrated.decision.method == "sgr" and calibrated.decision.target_risk == 0.4


def test_predict_select_and_the_calculator_flag_alike_with_a_calibrated_rule(
    fitted_probe, heldout_store, toy_files, tmp_path, capsys
):
    calibrated = tmp_path / "cal.probe"
    code, _ = run_cli(
        capsys,
        "calibrate",
        "--probe",
        fitted_probe,
        "--store",
        heldout_store,
        "--target-risk",
        "0.4",
        "--output",
        calibrated,
    )
    assert code == 0
    rule = load_probe(calibrated).decision
    model = ["--adapter", "toy", "--model", toy_files["models"][0]]
    pool = write_frames(tmp_path / "pool.xyz", ase.io.read(toy_files["heldout"], ":40"))
    code, _ = run_cli(capsys, "predict", *model, "--probe", calibrated, "--input", pool, "--output", tmp_path / "p.xyz")
    assert code == 0
    summary = capsys.readouterr()
    predicted = ase.io.read(tmp_path / "p.xyz", ":")
    flags = [a.info["probe_unreliable"] for a in predicted]
    for atoms in predicted:  # the stored rule, not 0.5
        assert atoms.info["probe_unreliable"] == rule.unreliable(
            atoms.info["probe_reliability"], atoms.info["probe_in_domain"]
        )
    code, _ = run_cli(
        capsys, "select", *model, "--probe", calibrated, "--input", pool, "--n", "40", "--output", tmp_path / "s.xyz"
    )
    assert code == 0
    selected = {a.info["probe_pool_index"]: a for a in ase.io.read(tmp_path / "s.xyz", ":")}
    for i, atoms in enumerate(predicted):
        assert selected[i].info["probe_reliability"] == pytest.approx(atoms.info["probe_reliability"], abs=1e-6)
        assert selected[i].info["probe_unreliable"] == flags[i]
    calc = attach(ToyCalculator(toy_files["models"][0]), calibrated, policy="ignore")
    for i in range(0, 40, 7):
        atoms = ase.io.read(pool, i)
        atoms.calc = calc
        atoms.get_potential_energy()
        assert calc.results["unreliable"] == flags[i]
    del summary


# ---- minor messages -------------------------------------------------------------------------
def test_a_one_structure_store_names_the_real_fix(toy_adapter, toy_files, tmp_path, capsys):
    one = write_frames(tmp_path / "one.xyz", ase.io.read(toy_files["heldout"], ":1"))
    store = extract(toy_adapter, one, tmp_path / "one.h5", progress=False)
    code, error = run_cli(capsys, "fit", "--store", store, "--output", tmp_path / "o.probe", "--threshold", "0.01")
    assert code == 2 and "extract more labelled structures" in error and "--threshold" not in error.split(":", 2)[-1]


def test_an_empty_file_says_it_is_empty(toy_files, tmp_path, capsys, fitted_probe):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    code, error = predict(capsys, toy_files, fitted_probe, empty, tmp_path / "o.xyz")
    assert code == 2 and "the file is empty" in error


def test_a_negative_index_needs_no_equals_sign(toy_files, fitted_probe, tmp_path, capsys):
    code, _ = predict(capsys, toy_files, fitted_probe, toy_files["heldout"], tmp_path / "last.xyz", "--index", "-3:")
    assert code == 0 and len(ase.io.read(tmp_path / "last.xyz", ":")) == 3


def test_a_reference_from_other_weights_says_the_weights_differ(toy_files, heldout_store, tmp_path, capsys):
    from probe_base.toy import ToyAdapter

    other = extract(
        ToyAdapter(toy_files["models"][1:2]), toy_files["train"], tmp_path / "other.h5", labels=False, progress=False
    )
    code, error = run_cli(
        capsys,
        "fit",
        "--store",
        heldout_store,
        "--reference",
        other,
        "--output",
        tmp_path / "r.probe",
        "--quantile",
        "0.5",
    )
    assert code == 2 and "the model weights differ" in error
