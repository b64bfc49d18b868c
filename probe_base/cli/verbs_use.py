"""The subparsers of the verbs that measure, calibrate or apply a fitted probe: ``probe
evaluate``, ``predict``, ``calibrate``, ``select`` and ``md``; and ``probe demo``, the whole
chain on a built-in example."""

from __future__ import annotations

from pathlib import Path

from probe_base.cli.options import COUNT, POSITIVE, POSITIVE_INT, RATE, SHARE, _add_backbone_args, _number


def add_evaluate_parser(subparsers):
    """`probe evaluate`: run by ``probe_base.cli.commands.cmd_evaluate``."""
    p = subparsers.add_parser(
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


def add_predict_parser(subparsers):
    """`probe predict`: run by ``probe_base.cli.commands.cmd_predict``."""
    p = subparsers.add_parser(
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


def add_demo_parser(subparsers):
    """`probe demo`: run by ``probe_base.cli.commands.cmd_demo``."""
    p = subparsers.add_parser(
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


def add_calibrate_parser(subparsers):
    """`probe calibrate`: run by ``probe_base.cli.commands.cmd_calibrate``."""
    p = subparsers.add_parser(
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


def add_select_parser(subparsers):
    """`probe select`: run by ``probe_base.cli.commands.cmd_select``."""
    p = subparsers.add_parser(
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
