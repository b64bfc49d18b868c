"""The subparsers of the verbs that make a probe: ``probe extract`` (features of a labelled
dataset into a store) and ``probe fit`` (the probe from a store). Their defaults and choices
come from the library's light modules (numpy only), so the CLI states no number twice."""

from __future__ import annotations

from pathlib import Path

from probe_base.cli.options import HOLDOUT, POSITIVE, POSITIVE_INT, RATE, _add_backbone_args, _number
from probe_base.decision import DEFAULT_ALPHA, DEFAULT_CALIBRATION_FRACTION, DEFAULT_FALSE_ALARM
from probe_base.labels import DEFAULT_TOLERANCES, OFFSET_SIGNIFICANCE, TARGETS, UNITS
from probe_base.net.recipes import ATTENTIONS, AUTO_POOLING_ATOMS, CALIBRATIONS, PRESETS


def add_extract_parser(subparsers):
    """`probe extract`: run by ``probe_base.cli.commands.cmd_extract``."""
    p = subparsers.add_parser(
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


def add_fit_parser(subparsers):
    """`probe fit`: run by ``probe_base.cli.commands.cmd_fit``."""
    p = subparsers.add_parser("fit", help="train the probe on a feature store")
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
