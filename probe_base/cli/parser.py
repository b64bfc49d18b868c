"""The ``probe`` command's argument parser: every subcommand and its options, no work done
(``probe --help`` imports nothing heavy)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# the library's defaults and choices (light modules: numpy only), so the CLI states no number twice
from probe_base.decision import DEFAULT_ALPHA, DEFAULT_CALIBRATION_FRACTION, DEFAULT_FALSE_ALARM
from probe_base.labels import DEFAULT_TOLERANCES, OFFSET_SIGNIFICANCE, TARGETS, UNITS
from probe_base.net.recipes import ATTENTIONS, AUTO_POOLING_ATOMS, CALIBRATIONS, PRESETS

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


def _number(kind, low=None, high=None, low_open=False, high_open=False, what="a number"):
    """An argparse type: ``kind`` within [low, high] (open ends where asked), with the
    allowed range in the message."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if value != value or too_low or too_high:  # value != value: NaN
            left = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            right = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: must be {' and '.join(filter(None, [left, right]))}"
            )
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


POSITIVE_INT = _number(int, 1, what="a whole number")
COUNT = _number(int, 0, what="a whole number")
RATE = _number(float, 0, 1, low_open=True, high_open=True, what="a number in (0, 1)")
POSITIVE = _number(float, 0, low_open=True, what="a positive number")
HOLDOUT = _number(float, 0, 1, high_open=True, what="a fraction in [0, 1)")
SHARE = _number(float, 0, 1, low_open=True, what="a fraction in (0, 1]")


def _add_backbone_args(parser, several=True):
    parser.add_argument(
        "--adapter", required=True, help="backbone adapter: a name from `probe plugins` (e.g. mace) or module:Class"
    )
    parser.add_argument(
        "--model",
        nargs="+" if several else 1,
        required=True,
        type=Path,
        help="backbone model file(s); several = an ensemble whose first model is the "
        "backbone the probe reads (the others give the disagreement baseline)"
        if several
        else "backbone model file",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help="feature layers to read (default: the adapter's choice; see `probe plugins -v`)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for the backbone (cpu, cuda)")
    parser.add_argument(
        "--adapter-option",
        action="append",
        type=_adapter_option,
        default=[],
        metavar="KEY=VALUE",
        help="a backbone option of the adapter, e.g. head=omat (MACE), modal=mpa (SevenNet), "
        "charge=-1 (AIMNet2); repeat for several; VALUE is read as JSON where it parses "
        "(numbers, true, null, {...}), else as text. `probe plugins -v` lists each adapter's options",
    )


def _adapter_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. head=omat)")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def build_parser():
    parser = argparse.ArgumentParser(
        prog="probe",
        description="PROBE: probability that an MLIP prediction is reliable, read from the "
        "backbone's own per-atom features (one forward pass, no ensemble).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--threads", type=POSITIVE_INT, default=None, help="torch CPU threads, >= 1 (default: torch's)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list installed backbone adapters")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="load each plugin (imports torch): its adapters and their classes, broken "
        "plugins and adapter-name collisions",
    )

    p = sub.add_parser(
        "extract",
        help="run a labelled dataset through the backbone once and store "
        "per-atom features, predictions and reference errors (HDF5)",
    )
    _add_backbone_args(p)
    p.add_argument(
        "--input", required=True, type=Path, help="structures with reference labels (extxyz or any ase.io format)"
    )
    p.add_argument("--output", required=True, type=Path, help="feature store to write (.h5)")
    p.add_argument(
        "--energy-key", default=None, help="atoms.info key of the reference energy (default: the file's energy=)"
    )
    p.add_argument(
        "--forces-key", default=None, help="per-atom column of the reference forces (default: the file's forces)"
    )
    p.add_argument("--no-forces", action="store_true", help="the data has no reference forces")
    p.add_argument("--index", default=":", help="ase.io index of the frames to use (default: all)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="structures per backbone pass (>= 1)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="storage type of features")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing store (the new one is written beside it and replaces it only when complete)",
    )
    p.add_argument(
        "--no-labels",
        action="store_true",
        help="the data has no reference energies or forces: store features, predictions "
        "and ensemble members only (for a reference set; not for fit or evaluate)",
    )

    p = sub.add_parser("fit", help="train the probe on a feature store")
    p.add_argument("--store", required=True, type=Path, help="feature store from `probe extract`")
    p.add_argument("--output", required=True, type=Path, help="probe file to write (.probe)")
    p.add_argument(
        "--target",
        default="energy",
        choices=list(TARGETS),
        help="which error defines reliability (default: total energy error, as in the paper)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--threshold",
        type=POSITIVE,
        default=None,
        help="the tolerance: reliable = error <= threshold, in the target's unit (eV, eV/atom, eV/Å). "
        "Default: " + ", ".join(f"{t} {v:g} {UNITS[t]}" for t, v in DEFAULT_TOLERANCES.items()),
    )
    group.add_argument(
        "--quantile",
        type=RATE,
        default=None,
        help="a relative label instead: the threshold is this quantile of the fitting errors (0.5: the "
        "median, as in the paper; half of normal structures then count as unreliable)",
    )
    offset = p.add_mutually_exclusive_group()
    offset.add_argument(
        "--remove-offset",
        action="store_const",
        const=True,
        dest="offset",
        default="auto",
        help="energy targets: always subtract the fitting set's mean signed error first. Default: "
        f"subtract it when it is significant (> {OFFSET_SIGNIFICANCE:g} standard errors), since a constant "
        "shift changes neither forces nor relative energies",
    )
    offset.add_argument(
        "--keep-offset",
        action="store_const",
        const=False,
        dest="offset",
        help="energy targets: count a constant energy offset as error (absolute energies matter)",
    )
    p.add_argument(
        "--false-alarm",
        type=RATE,
        default=DEFAULT_FALSE_ALARM,
        help=f"the share of reliable in-distribution structures the decision may flag (default {DEFAULT_FALSE_ALARM:g}); "
        "its cut on P(reliable) is set on --calibration-fraction of the fitting set (split-conformal)",
    )
    p.add_argument(
        "--calibration-fraction",
        type=_number(float, 0, 1, low_open=True, high_open=True, what="a fraction in (0, 1)"),
        default=DEFAULT_CALIBRATION_FRACTION,
        help="share of the fitting set held out of the network's training to set the decision cut "
        f"(default {DEFAULT_CALIBRATION_FRACTION:g})",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="feature store of the backbone's TRAINING set (`probe extract --no-labels` is "
        "enough): the domain's reference atoms. Default: the fitting set",
    )
    p.add_argument(
        "--alpha",
        type=RATE,
        default=DEFAULT_ALPHA,
        help="the domain test's false-alarm rate: at most this fraction of in-distribution "
        f"structures is flagged as outside the domain (split-conformal; default {DEFAULT_ALPHA:g})",
    )
    p.add_argument(
        "--attention",
        choices=ATTENTIONS,
        default=None,
        help="self: attention among all atoms (time quadratic in atoms); pooling: a few "
        "learned queries attend to the atoms (linear: for 10^3-10^5 atoms); auto: pooling if a "
        f"fitting structure has more than {AUTO_POOLING_ATOMS} atoms, else self. Default: the "
        "preset's (auto for ours, self for the paper's)",
    )
    p.add_argument(
        "--no-domain",
        action="store_true",
        help="no domain test: the probe network's P(reliable) alone, also on structures "
        "unlike anything the backbone or the probe has seen",
    )
    p.add_argument(
        "--eval-fraction",
        type=HOLDOUT,
        default=0.0,
        help="fraction of the store kept out of fitting for `probe evaluate` (default 0)",
    )
    p.add_argument(
        "--preset",
        choices=["default", *PRESETS],
        default="default",
        help="probe recipe: ours (default) or the paper's; options given here override it",
    )
    p.add_argument("--seeds", type=POSITIVE_INT, default=None, help="number of probe seeds averaged (>= 1)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None, help="maximum epochs (>= 1)")
    p.add_argument(
        "--calibration",
        choices=[*CALIBRATIONS, "none"],
        default=None,
        help="how P(reliable) is calibrated on held-out logits (default: the preset's, temperature)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (fixes splits and training)")
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device for training the probe (cpu, cuda; under torchrun: cuda:LOCAL_RANK)",
    )

    p = sub.add_parser(
        "evaluate",
        help="metrics and plots of the probe against ensemble disagreement, "
        "latent distance and random, on the same structures",
    )
    p.add_argument("--probe", required=True, type=Path)
    p.add_argument(
        "--store",
        required=True,
        type=Path,
        help="labelled feature store (the fitting store: its held-out part is used)",
    )
    p.add_argument("--output-dir", required=True, type=Path, help="folder for metrics.json, PNG plots and report.html")
    p.add_argument("--bootstrap", type=COUNT, default=1000, help="bootstrap resamples for 95%% intervals (>= 0)")
    p.add_argument(
        "--chemiscope",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the evaluated structures as a chemiscope file (.json.gz): "
        "P(reliable), errors, per-atom maps, a PCA map of the backbone features",
    )
    p.add_argument(
        "--allow-backbone-mismatch",
        action="store_true",
        help="use a probe on a backbone other than the one it was trained on",
    )

    p = sub.add_parser(
        "predict",
        help="score new structures (no labels needed); writes extxyz with "
        "probe_reliability per structure and probe_importance per atom",
    )
    _add_backbone_args(p, several=False)
    p.add_argument("--probe", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path, help="extxyz to write")
    p.add_argument("--index", default=":")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="structures per backbone pass (>= 1)")
    p.add_argument(
        "--allow-backbone-mismatch",
        action="store_true",
        help="use a probe on a backbone other than the one it was trained on",
    )
    p.add_argument(
        "--chemiscope",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write a chemiscope file (.json.gz) of the scored structures: "
        "P(reliable), energy per atom, per-atom maps, a PCA map of the backbone features",
    )

    p = sub.add_parser(
        "demo",
        help="the whole chain on a built-in example (EMT copper clusters, a "
        "4-member backbone ensemble): metrics table, plots, scored extxyz",
    )
    p.add_argument("--backbone", default="mace", help="adapter whose example to run: mace (default) or toy")
    p.add_argument("--output-dir", type=Path, default=Path("probe-demo-output"))
    p.add_argument("--members", type=_number(int, 2, what="a whole number"), default=4, help="ensemble size (>= 2)")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train the example backbones from scratch instead of using the shipped ones",
    )

    p = sub.add_parser(
        "calibrate",
        help="choose the P(reliable) threshold whose selective risk (unreliable "
        "among accepted) stays below --target-risk with probability "
        ">= 1 - --delta; stored in the probe file",
    )
    p.add_argument("--probe", required=True, type=Path)
    p.add_argument(
        "--store",
        required=True,
        type=Path,
        help="labelled feature store not used for fitting (the fitting store: half of its "
        "held-out part is used, the other half stays for `probe evaluate`)",
    )
    p.add_argument(
        "--target-risk",
        required=True,
        type=RATE,
        help="the largest share of unreliable structures among the accepted ones, e.g. 0.1",
    )
    p.add_argument("--delta", type=RATE, default=0.05, help="allowed failure probability (default 0.05)")
    p.add_argument(
        "--method",
        choices=["sgr", "crc"],
        default="sgr",
        help="sgr: selective risk <= --target-risk w.p. >= 1-delta (Geifman & El-Yaniv 2017); crc: "
        "conformal risk control, expected rate of accepted-and-unreliable <= --target-risk",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="probe file to write (a new file; the input probe is kept as it was)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --probe itself with the calibrated probe (instead of --output)",
    )
    p.add_argument(
        "--calibration-fraction",
        type=SHARE,
        default=None,
        help="fraction of the eligible structures to calibrate on (default 0.5 of the "
        "held-out part of the fitting store, 1.0 of another store)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-backbone-mismatch", action="store_true")

    p = sub.add_parser(
        "select",
        help="pick the N unlabelled structures to label next (least reliable; "
        "--diverse: spread over the probe's embedding)",
    )
    _add_backbone_args(p, several=False)
    p.add_argument("--probe", required=True, type=Path)
    p.add_argument("--input", required=True, type=Path, help="pool of structures (no labels needed)")
    p.add_argument("--n", required=True, type=POSITIVE_INT, help="how many to pick (>= 1)")
    p.add_argument(
        "--diverse", action="store_true", help="farthest-point sampling among the --candidate-factor * N least reliable"
    )
    p.add_argument("--candidate-factor", type=_number(float, 1, what="a number >= 1"), default=5.0)
    p.add_argument("--output", required=True, type=Path, help="extxyz to write")
    p.add_argument("--index", default=":")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="structures per backbone pass (>= 1)")
    p.add_argument("--allow-backbone-mismatch", action="store_true")

    from probe_base.cli.reference import add_reference_parser  # `probe reference build` (its own file)

    add_reference_parser(sub)

    add_md_parser(sub)
    return parser


def add_md_parser(subparsers):
    """`probe md`: run by ``probe_base.cli.md.run_md``."""
    p = subparsers.add_parser(
        "md",
        help="MD with the probed backbone in LAMMPS (an input file: P(reliable) in thermo, per-atom "
        "reliability in dump) or TorchSim (a batch of structures, MACE); a run that warns or stops "
        "itself outside the domain",
    )
    p.add_argument(
        "--engine",
        choices=["lammps", "torchsim"],
        default="lammps",
        help="MD engine (default lammps); torchsim: batched MD of --structures (MACE, probe-mace[torchsim])",
    )
    p.add_argument(
        "--in",
        dest="lammps_input",
        default=None,
        type=Path,
        metavar="IN.LMP",
        help="lammps: the input (units metal, box, atoms, masses, fixes; no pair_style needed); "
        "thermo_style may use v_probe_reliability v_probe_novelty, dump custom d_probe_novelty d_probe_error",
    )
    p.add_argument(
        "--structures",
        type=Path,
        default=None,
        help="torchsim: extxyz (or any ASE format) of the systems run together as one batch",
    )
    p.add_argument("--steps", type=POSITIVE_INT, default=None, help="torchsim: MD steps")
    p.add_argument("--timestep", type=POSITIVE, default=1.0, help="torchsim: time step in fs (default 1)")
    p.add_argument(
        "--temperature", type=POSITIVE, default=300.0, help="torchsim: Langevin NVT temperature in K (default 300)"
    )
    p.add_argument("--seed", type=int, default=None, help="torchsim: seed of the momenta and the Langevin noise")
    _add_backbone_args(p, several=False)
    p.add_argument("--probe", required=True, type=Path, help="probe file from `probe fit`")
    p.add_argument(
        "--elements",
        nargs="+",
        default=None,
        help="lammps: element of each LAMMPS atom type, in type order (e.g. C H O)",
    )
    p.add_argument(
        "--policy",
        choices=["ignore", "warn", "stop", "collect"],
        default="warn",
        help="after --patience consecutive unreliable steps: warn (log step and atoms), stop "
        "(end the run there), collect (write the frames and go on); default warn",
    )
    p.add_argument(
        "--patience", type=POSITIVE_INT, default=1, help="consecutive unreliable steps that trigger the policy (>= 1)"
    )
    p.add_argument(
        "--threshold",
        type=_number(float, what="a number"),
        default=None,
        help="P(reliable) below which a step is unreliable (default: the probe's decision rule)",
    )
    p.add_argument(
        "--collect", type=Path, default=None, help="extxyz the unreliable frames are written to, for labelling"
    )
    p.add_argument(
        "--trusted", type=Path, default=None, help="extxyz of the last trusted frame, written when a stop ends the run"
    )
    p.add_argument("--log", type=Path, default=Path("log.lammps"), help="lammps: log file (default log.lammps)")
    p.add_argument(
        "--no-virial",
        action="store_true",
        help="periodic box without the potential's virial (the adapter gives no stress): NVE/NVT only, "
        "LAMMPS's pressure then lacks it",
    )
    p.add_argument("--allow-backbone-mismatch", action="store_true")
    return p
