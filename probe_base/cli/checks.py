"""What ``probe`` refuses before any model is loaded or any structure is read: the device,
the input files and selections, fractions, and the output path."""

from __future__ import annotations

from probe_base.errors import InputError

# which argument each command writes, and of which kind (None: a folder)
OUTPUTS = {
    "extract": ("output", "store"),
    "fit": ("output", "probe"),
    "calibrate": ("output", "probe"),
    "predict": ("output", "extxyz"),
    "select": ("output", "extxyz"),
    "evaluate": ("output_dir", None),
    "demo": ("output_dir", None),
}
INPUTS = ("input", "store", "probe", "model", "reference")


def check_before_work(args):
    """What can be refused before any model is loaded or any structure is read: the
    device, the input files and --index, --eval-fraction, and the output path."""
    if args.command == "plugins":
        return  # nothing to check, and nothing heavy to import for it
    from probe_base.io.data import check_input_file, selected_frames
    from probe_base.io.paths import check_output_dir, check_output_file

    if getattr(args, "device", None):
        check_device(args.device)
    if getattr(args, "input", None) is not None:
        check_input_file(args.input, "--input")
        selected_frames(args.input, getattr(args, "index", ":"))  # the index, framing, no frames
    if getattr(args, "probe", None) is not None:
        _check_probe_exists(args.probe)
    if args.command == "calibrate":
        if args.output is None and not args.overwrite:
            raise InputError(
                f"probe calibrate: pass --output NEW.probe for the calibrated probe (kept beside "
                f"{args.probe}), or --overwrite to replace {args.probe} itself"
            )
        if args.output is not None and args.overwrite:
            raise InputError("probe calibrate: give --output or --overwrite, not both")
    for model in getattr(args, "model", None) or []:
        check_input_file(model, "--model")
    if getattr(args, "eval_fraction", None) is not None and not 0 <= args.eval_fraction < 1:
        raise InputError(
            f"--eval-fraction {args.eval_fraction:g}: the fraction of the store kept "
            "out of fitting must be at least 0 and below 1 (e.g. 0.5)"
        )
    alpha = getattr(args, "alpha", None)
    if alpha is not None and not 0 < alpha < 1:
        raise InputError(
            f"--alpha {alpha:g}: the domain test's false-alarm rate must lie in (0, 1) "
            "(e.g. 0.02: at most 2 % of in-distribution structures flagged)"
        )
    name, kind = OUTPUTS.get(args.command, (None, None))
    output = getattr(args, name, None) if name else None
    if output is None:
        return
    if kind is None:
        check_output_dir(output, f"--{name.replace('_', '-')}")
        return
    inputs = []
    for argument in INPUTS:
        value = getattr(args, argument, None)
        if argument == "probe" and args.command == "calibrate" and args.overwrite:
            continue  # --overwrite: replaces its probe, asked for
        inputs.extend(value if isinstance(value, list) else [value])
    check_output_file(output, kind, [v for v in inputs if v is not None], f"--{name}")


def _check_probe_exists(path):
    from probe_base.errors import ArtifactError

    if not path.exists():
        raise ArtifactError(f"{path}: probe file not found; train one with `probe fit`")
    if path.is_dir():
        raise ArtifactError(f"{path}: is a folder, not a probe file; pass the .probe file `probe fit` wrote")


def check_device(device: str):
    """Refuse a device this machine does not have, before any model is loaded."""
    import torch

    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputError(
                f"--device {device}: CUDA is not available ({why}, torch "
                f"{torch.__version__}); use --device cpu or run on a machine with a GPU"
            )
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise InputError(
                f"--device {device}: this machine has {torch.cuda.device_count()} "
                f"CUDA device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {device}: Apple MPS is not available here; use --device cpu")
