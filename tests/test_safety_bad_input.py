"""Issue 17, items 7 and 10: bad input gets a clear one-line error, not a traceback, and before
any work starts. A missing or folder input, an unreadable extxyz (naming the frame and line), a
bad --index or --eval-fraction, an output folder that cannot be written or an --output-dir that is
a file, and a --device this machine lacks are each refused before a backbone loads. The item
number is in each test's name."""

import pytest
import torch
from safety_helpers import labelled_frames, model_args, read_only_folder, run_cli, write_frames

from probe_base.cli import main
from probe_base.errors import InputError


# ---- 7: tracebacks instead of messages ------------------------------------------------------
def test_item7_missing_or_folder_input_before_models_load(fitted_probe, toy_files, tmp_path, capsys, no_models_loaded):
    for given, expected in [
        (tmp_path / "missing.xyz", "missing.xyz: file not found; check --input"),
        (tmp_path, "is a folder, not a structure file"),
    ]:
        code, err = run_cli(
            capsys,
            "predict",
            *model_args(toy_files, 1),
            "--probe",
            fitted_probe,
            "--input",
            given,
            "--output",
            tmp_path / "out.xyz",
        )
        assert code == 2 and expected in err


@pytest.mark.parametrize(
    "defect,expected",
    [
        ("not_utf8", "structure 2: line 9 is not UTF-8 text"),
        ("count", "structure 2: line 9 should give the number of atoms but reads 'abc'"),
        ("truncated", "structure 3: is truncated"),
    ],
)
def test_item7_unreadable_extxyz_names_the_frame(
    defect, expected, toy_files, tmp_path, capsys, no_models_loaded, fitted_probe
):
    frames = labelled_frames(toy_files, 0, 4)
    source = write_frames(tmp_path / "a.xyz", frames)
    raw = source.read_bytes().split(b"\n")
    header_of_2 = sum(len(f) + 2 for f in frames[:2])  # 0-based line of frame 2's atom count
    if defect == "not_utf8":  # its comment line
        raw[header_of_2 + 1] = raw[header_of_2 + 1] + b" note=\xff\xfe"
        expected = expected.replace("line 9", f"line {header_of_2 + 2}")
    elif defect == "count":
        raw[header_of_2] = b"abc"
        expected = expected.replace("line 9", f"line {header_of_2 + 1}")
    else:
        raw = raw[:-3]
    source.write_bytes(b"\n".join(raw))
    code, err = run_cli(
        capsys,
        "predict",
        *model_args(toy_files, 1),
        "--probe",
        fitted_probe,
        "--input",
        source,
        "--output",
        tmp_path / "out.xyz",
    )
    assert code == 2 and f"a.xyz, {expected}" in err, err


def test_item7_bad_index_and_eval_fraction(heldout_store, toy_files, tmp_path, capsys, no_models_loaded):
    code, err = run_cli(
        capsys,
        "extract",
        *model_args(toy_files),
        "--input",
        toy_files["train"],
        "--output",
        tmp_path / "s.h5",
        "--index",
        "abc",
    )
    assert code == 2 and "--index 'abc' is not an ase.io index" in err
    for fraction in ("1", "1.5", "-0.5"):  # refused by the parser, with the range
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "fit",
                    "--store",
                    str(heldout_store),
                    "--output",
                    str(tmp_path / "p.probe"),
                    "--eval-fraction",
                    fraction,
                ]
            )
        assert exit_info.value.code == 2
        assert f"argument --eval-fraction: {fraction} is out of range: must be >= 0 and < 1" in capsys.readouterr().err
    assert not (tmp_path / "p.probe").exists()


def test_item7_read_only_output_folder_is_refused_before_any_work(
    heldout_store, fitted_probe, toy_files, tmp_path, capsys, monkeypatch
):
    import probe_base.workflow.evaluate as evaluate_module
    import probe_base.workflow.fit as fit_module

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output folder was checked")

    with read_only_folder(tmp_path / "ro") as folder:
        # each step reads the store through its own module's name
        monkeypatch.setattr(fit_module, "load_store", no_work)
        monkeypatch.setattr(evaluate_module, "load_store", no_work)
        for argv in (
            ["fit", "--store", heldout_store, "--output", folder / "p.probe"],
            ["evaluate", "--probe", fitted_probe, "--store", heldout_store, "--output-dir", folder / "report"],
        ):
            code, err = run_cli(capsys, *argv)
            assert code == 2 and f"{folder}: cannot write there" in err, err
        from probe_base.cli import commands

        monkeypatch.setattr(commands, "_adapter", no_work)
        for argv in (
            ["extract", *model_args(toy_files), "--input", toy_files["train"], "--output", folder / "s.h5"],
            [
                "predict",
                *model_args(toy_files, 1),
                "--probe",
                fitted_probe,
                "--input",
                toy_files["train"],
                "--output",
                folder / "scored.xyz",
            ],
        ):
            code, err = run_cli(capsys, *argv)
            assert code == 2 and "cannot write there" in err, err


def test_item7_output_dir_that_is_a_file(fitted_probe, heldout_store, tmp_path, capsys):
    existing = tmp_path / "report"
    existing.write_text("my notes")
    code, err = run_cli(capsys, "evaluate", "--probe", fitted_probe, "--store", heldout_store, "--output-dir", existing)
    assert code == 2 and "report: exists and is a file, not a folder" in err
    assert existing.read_text() == "my notes"


# ---- 10: misleading device message ----------------------------------------------------------
def test_item10_cuda_without_cuda_says_so(fitted_probe, toy_files, tmp_path, capsys, monkeypatch, no_models_loaded):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (
        [
            "predict",
            *model_args(toy_files, 1),
            "--probe",
            fitted_probe,
            "--input",
            toy_files["train"],
            "--output",
            tmp_path / "o.xyz",
            "--device",
            "cuda",
        ],
        [
            "extract",
            *model_args(toy_files),
            "--input",
            toy_files["train"],
            "--output",
            tmp_path / "s.h5",
            "--device",
            "cuda:1",
        ],
    ):
        code, err = run_cli(capsys, *argv)
        assert code == 2 and "CUDA is not available" in err and "--device cpu" in err
        assert "non-compiled" not in err


def test_item10_devices_the_machine_has_pass_and_others_are_named(monkeypatch):
    from probe_base.cli import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for device in ("cpu", "cuda", "cuda:1"):
        check_device(device)
    with pytest.raises(
        InputError, match="--device cuda:2: this machine has 2 CUDA device\\(s\\) \\(cuda:0 to cuda:1\\)"
    ):
        check_device("cuda:2")
    with pytest.raises(InputError, match="'gpu0' is not a torch device"):
        check_device("gpu0")
