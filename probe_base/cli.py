"""The ``probe`` command: plugins, extract, fit, evaluate, predict, toy-example, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ProbeError

EXAMPLES = """
typical run (a MACE model, DFT data in extxyz):
  probe extract --adapter mace --model my.model m2.model m3.model m4.model \\
                --input heldout.xyz --output heldout.h5
  probe fit --store heldout.h5 --output my.probe --eval-fraction 0.5
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
    p.add_argument("-v", "--verbose", action="store_true", help="also list each adapter's class")

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
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")

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
    p.add_argument("--eval-fraction", type=float, default=0.0,
                   help="fraction of the store kept out of fitting for `probe evaluate` (default 0)")
    p.add_argument("--preset", choices=["default", "paper"], default="default",
                   help="probe recipe: ours (default) or the paper's")
    p.add_argument("--seeds", type=int, default=None, help="number of probe seeds averaged (probe ensemble)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs")
    p.add_argument("--calibration", choices=["temperature", "isotonic", "none"], default="temperature")
    p.add_argument("--seed", type=int, default=0, help="random seed (fixes splits and training)")

    p = sub.add_parser("evaluate", help="metrics and plots of the probe against ensemble disagreement, "
                                        "latent distance and random, on the same structures")
    p.add_argument("--probe", required=True, type=Path)
    p.add_argument("--store", required=True, type=Path,
                   help="labelled feature store (the fitting store: its held-out part is used)")
    p.add_argument("--output-dir", required=True, type=Path, help="folder for metrics.json and PNG plots")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals")
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

    p = sub.add_parser("toy-example", help="write a small worked example without any MLIP framework: "
                                           "EMT-labelled Cu clusters and a 4-member ensemble of a tiny "
                                           "message-passing MLIP trained on them")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--members", type=int, default=4)
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
        return COMMANDS[args.command](args) or 0
    except ProbeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_plugins(args):
    from .plugins import available_adapters

    adapters = available_adapters()
    if not adapters:
        print("no adapters installed (install a plugin such as probe-mace)")
    for info in adapters.values():
        line = f"{info.name:<12} {info.distribution} {info.version}"
        if args.verbose:
            line += f"  ({info.adapter_class.__module__}.{info.adapter_class.__qualname__})"
        print(line)


def cmd_extract(args):
    from .store import extract

    adapter = _adapter(args, args.model)
    print(f"backbone: {args.adapter}, {len(adapter.models)} model(s); layers "
          + ", ".join(f"{n} ({w})" for n, w in zip(adapter.layers, adapter.widths)))
    path = extract(adapter, args.input, args.output, index=args.index, energy_key=args.energy_key,
                   forces_key=args.forces_key, with_forces=not args.no_forces,
                   batch_size=args.batch_size, dtype=args.dtype, overwrite=args.overwrite)
    print(f"wrote {path}")


def cmd_fit(args):
    from .classifier import ProbeClassifier
    from .labels import LabelSpec
    from .workflow import fit_probe

    overrides = {"seed": args.seed, "progress": True,
                 "calibration": None if args.calibration == "none" else args.calibration}
    if args.seeds:
        overrides["n_seeds"] = args.seeds
    if args.epochs:
        overrides["max_epochs"] = args.epochs
    classifier = (ProbeClassifier(**overrides) if args.preset == "default"
                  else ProbeClassifier.from_preset(args.preset, **overrides))
    label = LabelSpec(args.target, args.threshold, None if args.threshold is not None else args.quantile)
    resolved, fitted = fit_probe(args.store, args.output, label, classifier, args.eval_fraction, args.seed)
    best = [max(h["val_auroc"] for h in history) for history in fitted.history_]
    print(f"label: {resolved.target} error <= {resolved.threshold:.4g} is reliable")
    print(f"validation AUROC per probe seed: {', '.join(f'{b:.3f}' for b in best)}; "
          f"temperature {fitted.temperature_:.3f}")
    print(f"wrote {args.output}")


def cmd_evaluate(args):
    from .workflow import evaluate_probe, metrics_table, write_evaluation

    evaluation = evaluate_probe(args.probe, args.store, n_bootstrap=args.bootstrap,
                                allow_mismatch=args.allow_backbone_mismatch)
    print(f"{evaluation['n_structures']} structures, {100 * evaluation['unreliable_fraction']:.1f}% "
          f"unreliable ({evaluation['label']['target']} error > {evaluation['label']['threshold']:.4g})")
    print(metrics_table(evaluation))
    folder = write_evaluation(evaluation, args.output_dir)
    print(f"metrics and plots in {folder}")


def cmd_predict(args):
    from .workflow import predict_file

    adapter = _adapter(args, args.model)
    annotated = predict_file(args.probe, adapter, args.input, args.output, args.index,
                             args.batch_size, args.allow_backbone_mismatch)
    low = sum(a.info["probe_reliability"] < 0.5 for a in annotated)
    print(f"scored {len(annotated)} structures ({low} with P(reliable) < 0.5); wrote {args.output}")


def cmd_toy_example(args):
    from .toy import write_example

    paths = write_example(args.output_dir, n_members=args.members)
    for name, path in paths.items():
        print(f"{name:<10} {path}")


COMMANDS = {"plugins": cmd_plugins, "extract": cmd_extract, "fit": cmd_fit, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "toy-example": cmd_toy_example}

if __name__ == "__main__":
    sys.exit(main())
