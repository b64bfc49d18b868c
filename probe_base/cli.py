"""The ``probe`` command: plugins, extract, fit, evaluate, predict, calibrate, select, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InputError, ProbeError

EXAMPLES = """
typical run (a MACE model, DFT data in extxyz):
  probe extract --adapter mace --model my.model m2.model m3.model m4.model \\
                --input heldout.xyz --output heldout.h5
  probe fit --store heldout.h5 --output my.probe --eval-fraction 0.5
  probe calibrate --probe my.probe --store heldout.h5 --target-risk 0.1 --delta 0.05
  probe evaluate --probe my.probe --store heldout.h5 --output-dir report/
  probe predict --probe my.probe --adapter mace --model my.model \\
                --input new_structures.xyz --output scored.xyz
"""


def _add_backbone_args(parser, several=True):
    parser.add_argument("--adapter", required=True,
                        help="backbone adapter: a name from `probe plugins` (e.g. mace) or module:Class")
    parser.add_argument("--model", nargs="+" if several else 1, required=True, type=Path,
                        help="backbone model file(s); several = an ensemble whose first model is the "
                             "backbone the probe reads (the others give the disagreement baseline)"
                        if several else "backbone model file")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="feature layers to read (default: the adapter's choice; see `probe plugins -v`)")
    parser.add_argument("--device", default="cpu", help="torch device for the backbone (cpu, cuda)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="probe",
        description="PROBE: probability that an MLIP prediction is reliable, read from the "
                    "backbone's own per-atom features (one forward pass, no ensemble).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list installed backbone adapters")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="load each plugin (imports torch): its adapters and their classes, broken "
                        "plugins and adapter-name collisions")

    p = sub.add_parser("extract", help="run a labelled dataset through the backbone once and store "
                                       "per-atom features, predictions and reference errors (HDF5)")
    _add_backbone_args(p)
    p.add_argument("--input", required=True, type=Path, help="structures with reference labels (extxyz or any ase.io format)")
    p.add_argument("--output", required=True, type=Path, help="feature store to write (.h5)")
    p.add_argument("--energy-key", default=None, help="atoms.info key of the reference energy (default: the file's energy=)")
    p.add_argument("--forces-key", default=None, help="per-atom column of the reference forces (default: the file's forces)")
    p.add_argument("--no-forces", action="store_true", help="the data has no reference forces")
    p.add_argument("--index", default=":", help="ase.io index of the frames to use (default: all)")
    p.add_argument("--batch-size", type=int, default=32, help="structures per backbone pass")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="storage type of features")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing store (the new one is written beside it and replaces "
                        "it only when complete)")
    p.add_argument("--no-labels", action="store_true",
                   help="the data has no reference energies or forces: store features, predictions "
                        "and ensemble members only (for a reference set; not for fit or evaluate)")

    p = sub.add_parser("fit", help="train the probe on a feature store")
    p.add_argument("--store", required=True, type=Path, help="feature store from `probe extract`")
    p.add_argument("--output", required=True, type=Path, help="probe file to write (.probe)")
    p.add_argument("--target", default="energy", choices=["energy", "energy_per_atom", "force_rmse", "force_max"],
                   help="which error defines reliability (default: total energy error, as in the paper)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=float, default=None,
                       help="absolute error threshold (eV, eV/atom or eV/Å); reliable = error <= threshold")
    group.add_argument("--quantile", type=float, default=0.5,
                       help="threshold as a quantile of the fitting errors (default 0.5: the median, as in the paper)")
    p.add_argument("--remove-offset", action="store_true",
                   help="energy targets: subtract the fitting set's mean signed error first, so a "
                        "constant energy shift of the backbone does not decide what is unreliable")
    p.add_argument("--reference", type=Path, default=None,
                   help="feature store of the backbone's TRAINING set (`probe extract --no-labels` is "
                        "enough): the domain's reference atoms. Default: the fitting set")
    p.add_argument("--alpha", type=float, default=0.02,
                   help="the domain test's false-alarm rate: at most this fraction of in-distribution "
                        "structures is flagged as outside the domain (split-conformal; default 0.02)")
    p.add_argument("--attention", choices=["auto", "self", "pooling"], default="auto",
                   help="self: attention among all atoms (time quadratic in atoms); pooling: a few "
                        "learned queries attend to the atoms (linear: for 10^3-10^5 atoms); auto "
                        "(default): pooling if a fitting structure has more than 250 atoms, else self")
    p.add_argument("--no-domain", action="store_true",
                   help="no domain test: the probe network's P(reliable) alone, also on structures "
                        "unlike anything the backbone or the probe has seen")
    p.add_argument("--eval-fraction", type=float, default=0.0,
                   help="fraction of the store kept out of fitting for `probe evaluate` (default 0)")
    p.add_argument("--preset", choices=["default", "paper"], default="default",
                   help="probe recipe: ours (default) or the paper's")
    p.add_argument("--seeds", type=int, default=None, help="number of probe seeds averaged (probe ensemble)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs")
    p.add_argument("--calibration", choices=["temperature", "isotonic", "none"], default="temperature")
    p.add_argument("--seed", type=int, default=0, help="random seed (fixes splits and training)")
    p.add_argument("--device", default="cpu",
                   help="torch device for training the probe (cpu, cuda; under torchrun: cuda:LOCAL_RANK)")

    p = sub.add_parser("evaluate", help="metrics and plots of the probe against ensemble disagreement, "
                                        "latent distance and random, on the same structures")
    p.add_argument("--probe", required=True, type=Path)
    p.add_argument("--store", required=True, type=Path,
                   help="labelled feature store (the fitting store: its held-out part is used)")
    p.add_argument("--output-dir", required=True, type=Path, help="folder for metrics.json, PNG plots and report.html")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals")
    p.add_argument("--chemiscope", type=Path, default=None, metavar="PATH",
                   help="also write the evaluated structures as a chemiscope file (.json.gz): "
                        "P(reliable), errors, per-atom maps, a PCA map of the backbone features")
    p.add_argument("--allow-backbone-mismatch", action="store_true",
                   help="use a probe on a backbone other than the one it was trained on")

    p = sub.add_parser("predict", help="score new structures (no labels needed); writes extxyz with "
                                       "probe_reliability per structure and probe_importance per atom")
    _add_backbone_args(p, several=False)
    p.add_argument("--probe", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path, help="extxyz to write")
    p.add_argument("--index", default=":")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--allow-backbone-mismatch", action="store_true",
                   help="use a probe on a backbone other than the one it was trained on")
    p.add_argument("--chemiscope", type=Path, default=None, metavar="PATH",
                   help="also write a chemiscope file (.json.gz) of the scored structures: "
                        "P(reliable), energy per atom, per-atom maps, a PCA map of the backbone features")

    p = sub.add_parser("demo", help="the whole chain on a built-in example (EMT copper clusters, a "
                                    "4-member backbone ensemble): metrics table, plots, scored extxyz")
    p.add_argument("--backbone", default="mace", help="adapter whose example to run: mace (default) or toy")
    p.add_argument("--output-dir", type=Path, default=Path("probe-demo-output"))
    p.add_argument("--members", type=int, default=4, help="ensemble size for the comparison")
    p.add_argument("--retrain", action="store_true",
                   help="train the example backbones from scratch instead of using the shipped ones")

    p = sub.add_parser("calibrate", help="choose the P(reliable) threshold whose selective risk (unreliable "
                                         "among accepted) stays below --target-risk with probability "
                                         ">= 1 - --delta; stored in the probe file")
    p.add_argument("--probe", required=True, type=Path)
    p.add_argument("--store", required=True, type=Path,
                   help="labelled feature store not used for fitting (the fitting store: half of its "
                        "held-out part is used, the other half stays for `probe evaluate`)")
    p.add_argument("--target-risk", required=True, type=float, help="alpha, e.g. 0.1")
    p.add_argument("--delta", type=float, default=0.05, help="allowed failure probability (default 0.05)")
    p.add_argument("--method", choices=["sgr", "crc"], default="sgr",
                   help="sgr: selective risk <= alpha w.p. >= 1-delta (Geifman & El-Yaniv 2017); crc: "
                        "conformal risk control, expected rate of accepted-and-unreliable <= alpha")
    p.add_argument("--output", type=Path, default=None, help="probe file to write (default: update --probe)")
    p.add_argument("--calibration-fraction", type=float, default=None,
                   help="fraction of the eligible structures to calibrate on (default 0.5 of the "
                        "held-out part of the fitting store, 1.0 of another store)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-backbone-mismatch", action="store_true")

    p = sub.add_parser("select", help="pick the N unlabelled structures to label next (least reliable; "
                                      "--diverse: spread over the probe's embedding)")
    _add_backbone_args(p, several=False)
    p.add_argument("--probe", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path, help="pool of structures (no labels needed)")
    p.add_argument("--n", required=True, type=int, help="how many to pick")
    p.add_argument("--diverse", action="store_true",
                   help="farthest-point sampling among the --candidate-factor * N least reliable")
    p.add_argument("--candidate-factor", type=float, default=5.0)
    p.add_argument("--output", required=True, type=Path, help="extxyz to write")
    p.add_argument("--index", default=":")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--allow-backbone-mismatch", action="store_true")
    return parser


def _adapter(args, model_paths):
    from .plugins import get_adapter_class

    return get_adapter_class(args.adapter)(model_paths, layers=args.layers, device=args.device)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        check_before_work(args)
        return COMMANDS[args.command](args) or 0
    except ProbeError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a user's path that the checks could not foresee (e.g. disk full)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{_one_line(exc.strerror or str(exc))}; check the path and free "
              "disk space, then run the command again", file=sys.stderr)
        return 2


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


# which argument each command writes, and of which kind (None: a folder)
OUTPUTS = {"extract": ("output", "store"), "fit": ("output", "probe"), "calibrate": ("output", "probe"),
           "predict": ("output", "extxyz"), "select": ("output", "extxyz"),
           "evaluate": ("output_dir", None), "demo": ("output_dir", None)}
INPUTS = ("input", "store", "probe", "model", "reference")


def check_before_work(args):
    """What can be refused before any model is loaded or any structure is read: the
    device, the input files and --index, --eval-fraction, and the output path."""
    if args.command == "plugins":
        return  # nothing to check, and nothing heavy to import for it
    from .data import check_input_file, selected_frames
    from .paths import check_output_dir, check_output_file

    if getattr(args, "device", None):
        check_device(args.device)
    if getattr(args, "input", None) is not None:
        check_input_file(args.input, "--input")
        selected_frames(args.input, getattr(args, "index", ":"))  # the index, framing, no frames
    if getattr(args, "probe", None) is not None and args.command != "calibrate":
        _check_probe_exists(args.probe)
    for model in getattr(args, "model", None) or []:
        check_input_file(model, "--model")
    if getattr(args, "eval_fraction", None) is not None and not 0 <= args.eval_fraction < 1:
        raise InputError(f"--eval-fraction {args.eval_fraction:g}: the fraction of the store kept "
                         "out of fitting must be at least 0 and below 1 (e.g. 0.5)")
    alpha = getattr(args, "alpha", None)
    if alpha is not None and not 0 < alpha < 1:
        raise InputError(f"--alpha {alpha:g}: the domain test's false-alarm rate must lie in (0, 1) "
                         "(e.g. 0.02: at most 2 % of in-distribution structures flagged)")
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
        if argument == "probe" and args.command == "calibrate":
            continue  # calibrate updates its probe in place by design
        inputs.extend(value if isinstance(value, list) else [value])
    check_output_file(output, kind, [v for v in inputs if v is not None], f"--{name}")


def _check_probe_exists(path):
    from .errors import ArtifactError

    if not path.exists():
        raise ArtifactError(f"{path}: probe file not found; train one with `probe fit`")
    if path.is_dir():
        raise ArtifactError(f"{path}: is a folder, not a probe file; pass the .probe file "
                            "`probe fit` wrote")


def check_device(device: str):
    """Refuse a device this machine does not have, before any model is loaded."""
    import torch

    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise InputError(f"--device {device}: CUDA is not available ({why}, torch "
                             f"{torch.__version__}); use --device cpu or run on a machine with a GPU")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {device}: Apple MPS is not available here; use --device cpu")


def cmd_plugins(args):
    from .plugins import available_adapters, installed_plugins, plugin_problems

    if not args.verbose:  # metadata only: loading the plugins would import torch
        plugins = installed_plugins()
        if not plugins:
            print("no adapters installed (install a plugin such as probe-mace)")
        for info in plugins:
            print(f"{info.name:<12} BROKEN: ModuleNotFoundError: no module {info.module!r}" if info.missing
                  else f"{info.name:<12} {info.distribution} {info.version}")
        return
    adapters = available_adapters()
    problems = plugin_problems()
    if not adapters:
        print("no adapters installed (install a plugin such as probe-mace)")
    for info in adapters.values():
        line = f"{info.name:<12} {info.distribution} {info.version}"
        if args.verbose:
            line += f"  ({info.adapter_class.__module__}.{info.adapter_class.__qualname__})"
        print(line)
    for plugin, error in problems.broken.items():
        print(f"{plugin:<12} BROKEN: {error}")
    for name, where in problems.collisions.items():
        print(f"{name:<12} COLLISION: registered by " + " and ".join(f"{d} (plugin {p!r})" for d, p in where))


def cmd_extract(args):
    from .distributed import extract_sharded, session
    from .store import extract

    with session(args.device) as group:  # None unless launched by torchrun with >1 process
        if group is not None:
            args.device = group.device
        say = print if group is None or group.rank == 0 else (lambda *a: None)
        adapter = _adapter(args, args.model)
        say(f"backbone: {args.adapter}, {len(adapter.models)} model(s); layers "
            + ", ".join(f"{n} ({w})" for n, w in zip(adapter.layers, adapter.widths)))
        options = dict(index=args.index, energy_key=args.energy_key, forces_key=args.forces_key,
                       with_forces=not args.no_forces, labels=not args.no_labels,
                       batch_size=args.batch_size, dtype=args.dtype, overwrite=args.overwrite)
        if group is None:
            path = extract(adapter, args.input, args.output, **options)
        else:
            say(f"{group.world} ranks: shards in {args.output}.shards/")
            path = extract_sharded(adapter, args.input, args.output, group, **options)
        say(f"wrote {path}")


def cmd_fit(args):
    from .distributed import Local, session

    with session(args.device) as group:  # None unless launched by torchrun with >1 process
        if group is None and args.device != "cpu":
            group = Local()  # one process on a GPU
            group.device = args.device
        _fit(args, group)


def _fit(args, group):
    from .classifier import ProbeClassifier
    from .labels import LabelSpec
    from .workflow import fit_probe

    rank0 = group is None or group.rank == 0
    overrides = {"seed": args.seed, "progress": rank0, "attention": args.attention,
                 "calibration": None if args.calibration == "none" else args.calibration}
    if args.seeds:
        overrides["n_seeds"] = args.seeds
    if args.epochs:
        overrides["max_epochs"] = args.epochs
    classifier = (ProbeClassifier(**overrides) if args.preset == "default"
                  else ProbeClassifier.from_preset(args.preset, **overrides))
    label = LabelSpec(args.target, args.threshold, None if args.threshold is not None else args.quantile,
                      remove_offset=args.remove_offset)
    if args.reference is None and not args.no_domain and rank0:
        print("domain: no --reference given, so the fitting set serves as the backbone's domain "
              "(pass --reference TRAIN.h5, a store of the backbone's training set, to test against "
              "what the backbone saw)")
    resolved, fitted = fit_probe(args.store, args.output, label, classifier, args.eval_fraction,
                                 args.seed, comm=group, reference=args.reference,
                                 domain=not args.no_domain, alpha=args.alpha)
    if not rank0:
        return
    if fitted.domain_ is not None:
        print(fitted.domain_.summary())
    if fitted.atom_errors_ is not None:
        print("per-atom map: force-error head fitted on the reference forces (results['atom_error'])")
    best = [max(h["val_auroc"] for h in history) for history in fitted.history_]
    print(f"label: {resolved.target} error <= {resolved.threshold:.4g} is reliable")
    print(f"validation AUROC per probe seed: {', '.join(f'{b:.3f}' for b in best)}; "
          f"temperature {fitted.temperature_:.3f}")
    print(f"wrote {args.output}")


def cmd_evaluate(args):
    from .workflow import evaluate_probe, metrics_table, write_evaluation

    if args.chemiscope:
        from .chemiscope_export import require_chemiscope

        require_chemiscope(args.chemiscope)  # fail before the evaluation, not after
    evaluation = evaluate_probe(args.probe, args.store, n_bootstrap=args.bootstrap,
                                allow_mismatch=args.allow_backbone_mismatch)
    print(f"{evaluation['n_structures']} structures, {100 * evaluation['unreliable_fraction']:.1f}% "
          f"unreliable ({evaluation['label']['target']} error > {evaluation['label']['threshold']:.4g})")
    print(metrics_table(evaluation))
    if evaluation.get("selective"):
        from .selective import format_selective

        print(format_selective(evaluation["selective"]))
    folder = write_evaluation(evaluation, args.output_dir)
    print(f"metrics and plots in {folder}; the report: {folder / 'report.html'}")
    if args.chemiscope:
        from .chemiscope_export import chemiscope_from_evaluation

        missing = chemiscope_from_evaluation(evaluation, args.chemiscope)
        print(f"wrote {args.chemiscope}" + (f" (the map only: {missing})" if missing else ""))


def cmd_predict(args):
    from .workflow import predict_file

    adapter = _adapter(args, args.model)
    collector = None
    if args.chemiscope:
        from .chemiscope_export import PredictionCollector

        collector = PredictionCollector(args.chemiscope)  # checks before the run
    annotated = predict_file(args.probe, adapter, args.input, args.output, args.index,
                             args.batch_size, args.allow_backbone_mismatch, on_batch=collector)
    low = sum(a.info["probe_reliability"] < 0.5 for a in annotated)
    outside = sum(not a.info["probe_in_domain"] for a in annotated)
    print(f"scored {len(annotated)} structures ({low} with P(reliable) < 0.5, {outside} of them outside "
          f"the backbone's domain); wrote {args.output}")
    if args.chemiscope:
        from .chemiscope_export import chemiscope_from_predictions

        print(f"wrote {chemiscope_from_predictions(annotated, collector, args.chemiscope)}")


def cmd_calibrate(args):
    from .selective import calibrate_probe, min_calibration_size

    control = calibrate_probe(args.probe, args.store, args.target_risk, args.delta, args.method,
                              args.output, args.calibration_fraction, args.seed,
                              args.allow_backbone_mismatch)
    if args.method == "sgr":
        print(f"guarantee: selective risk <= {args.target_risk:g} with probability >= {1 - args.delta:g} (SGR)")
    else:
        print(f"guarantee: expected rate of accepted-and-unreliable predictions <= {args.target_risk:g} (CRC)")
    if control.achievable:
        print(f"threshold P(reliable) >= {control.threshold:.4g}: calibration coverage "
              f"{100 * control.coverage:.1f}% ({control.n_accepted}/{control.n_calibration}), "
              f"selective risk {100 * control.risk:.1f}%"
              + (f", bound {100 * control.risk_bound:.1f}%" if control.risk_bound is not None else ""))
    else:
        needed = min_calibration_size(args.target_risk, args.delta) if args.method == "sgr" else 0
        hint = (f" (SGR needs >= {needed} calibration structures even if all are reliable)"
                if control.n_calibration < needed else "")
        print(f"no threshold meets the target on {control.n_calibration} calibration structures{hint}: "
              "every prediction will be flagged unreliable; raise --target-risk or calibrate on more data")
    print(f"wrote {args.output or args.probe}")


def cmd_select(args):
    from .selection import select_file

    adapter = _adapter(args, args.model)
    picked = select_file(args.probe, adapter, args.input, args.output, args.n, args.diverse,
                         args.candidate_factor, args.index, args.batch_size,
                         args.allow_backbone_mismatch)
    p = [a.info["probe_reliability"] for a in picked]
    print(f"picked {len(picked)} structures (P(reliable) {min(p):.3f} to {max(p):.3f}"
          f"{', diverse' if args.diverse else ''}); wrote {args.output}")


def cmd_demo(args):
    from .demo import run_demo

    run_demo(args.output_dir, args.backbone, args.members, args.retrain)


COMMANDS = {"plugins": cmd_plugins, "extract": cmd_extract, "fit": cmd_fit, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "calibrate": cmd_calibrate, "select": cmd_select,
            "demo": cmd_demo}

if __name__ == "__main__":
    sys.exit(main())
