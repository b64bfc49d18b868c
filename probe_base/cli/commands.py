"""The ``probe`` subcommands, one ``cmd_<name>(args)`` each; they import what they need
when they run, so one command does not pay for another's imports."""

from __future__ import annotations

import json

from probe_base.cli.backbone import backbone_adapter as _adapter
from probe_base.cli.md import run_md
from probe_base.cli.reference import run_reference


def cmd_plugins(args):
    from probe_base.plugins import available_adapters, installed_plugins, plugin_problems

    if not args.verbose:  # metadata only: loading the plugins would import torch
        plugins = installed_plugins()
        if not plugins:
            print("no adapters installed (install a plugin such as probe-mace)")
        for info in plugins:
            print(
                f"{info.name:<12} BROKEN: ModuleNotFoundError: no module {info.module!r}"
                if info.missing
                else f"{info.name:<12} {info.distribution} {info.version}"
            )
        return
    adapters = available_adapters()
    problems = plugin_problems()
    if not adapters:
        print("no adapters installed (install a plugin such as probe-mace)")
    for info in adapters.values():
        line = f"{info.name:<12} {info.distribution} {info.version}"
        if args.verbose:
            line += f"  ({info.adapter_class.__module__}.{info.adapter_class.__qualname__})"
            options = info.adapter_class.default_parameters
            if options:
                line += "  --adapter-option " + " ".join(f"{k}={json.dumps(v)}" for k, v in options.items())
        print(line)
    for plugin, error in problems.broken.items():
        print(f"{plugin:<12} BROKEN: {error}")
    for name, where in problems.collisions.items():
        print(f"{name:<12} COLLISION: registered by " + " and ".join(f"{d} (plugin {p!r})" for d, p in where))


def cmd_extract(args):
    from probe_base.distributed import extract_sharded, session
    from probe_base.store import extract

    with session(args.device) as group:  # None unless launched by torchrun with >1 process
        if group is not None:
            args.device = group.device
        say = print if group is None or group.rank == 0 else (lambda *a: None)
        adapter = _adapter(args, args.model)
        say(
            f"backbone: {args.adapter}, {len(adapter.models)} model(s); layers "
            + ", ".join(f"{n} ({w})" for n, w in zip(adapter.layers, adapter.widths))
        )
        options = dict(
            index=args.index,
            energy_key=args.energy_key,
            forces_key=args.forces_key,
            with_forces=not args.no_forces,
            labels=not args.no_labels,
            batch_size=args.batch_size,
            dtype=args.dtype,
            overwrite=args.overwrite,
        )
        if group is None:
            path = extract(adapter, args.input, args.output, **options)
        else:
            say(f"{group.world} ranks: shards in {args.output}.shards/")
            path = extract_sharded(adapter, args.input, args.output, group, **options)
        say(f"wrote {path}")


def cmd_fit(args):
    from probe_base.distributed import Local, session

    with session(args.device) as group:  # None unless launched by torchrun with >1 process
        if group is None and args.device != "cpu":
            group = Local()  # one process on a GPU
            group.device = args.device
        _fit(args, group)


def classifier_of_args(args, progress=False):
    """The ``ProbeClassifier`` that ``probe fit`` trains: the preset, overridden only by the
    options the user gave."""
    from probe_base.net.classifier import ProbeClassifier

    overrides = {"seed": args.seed, "progress": progress}
    if args.attention is not None:
        overrides["attention"] = args.attention
    if args.calibration is not None:
        overrides["calibration"] = None if args.calibration == "none" else args.calibration
    if args.seeds:
        overrides["n_seeds"] = args.seeds
    if args.epochs:
        overrides["max_epochs"] = args.epochs
    if args.preset == "default":
        return ProbeClassifier(**overrides)
    return ProbeClassifier.from_preset(args.preset, **overrides)


def _fit(args, group):
    from probe_base.labels import LabelSpec
    from probe_base.workflow.fit import fit_probe

    rank0 = group is None or group.rank == 0
    classifier = classifier_of_args(args, progress=rank0)
    label = LabelSpec(args.target, args.threshold, args.quantile, remove_offset=args.offset)
    if args.reference is None and not args.no_domain and rank0:
        print(
            "domain: no --reference given, so the fitting set serves as the backbone's domain "
            "(pass --reference TRAIN.h5, a store of the backbone's training set, to test against "
            "what the backbone saw)"
        )
    fitted = fit_probe(
        args.store,
        args.output,
        label,
        classifier,
        args.eval_fraction,
        args.seed,
        comm=group,
        reference=args.reference,
        domain=not args.no_domain,
        alpha=args.alpha,
        false_alarm=args.false_alarm,
        calibration_fraction=args.calibration_fraction,
    )
    if not rank0:
        return
    if fitted.domain_ is not None:
        print(fitted.domain_.summary())
    if fitted.atom_errors_ is not None:
        print("per-atom map: force-error head fitted on the reference forces (results['atom_error'])")
    network = fitted.classifier_
    best = [max(h["val_auroc"] for h in history) for history in network.history_]
    print(f"label: {fitted.label_.describe()}")
    print(_offset_line(fitted.label_offset_, fitted.label_))
    print(f"decision: {fitted.decision_.describe()}")
    print(
        f"validation AUROC per probe seed: {', '.join(f'{b:.3f}' for b in best)}; temperature {network.temperature_:.3f}"
    )
    print(f"wrote {args.output}")


def _offset_line(offset, label) -> str:
    """What ``probe fit`` found of a constant energy offset, and what the label did with it."""
    if offset is None:
        return "energy offset: not applicable (force label)"
    from probe_base.labels import UNITS

    unit = UNITS[label.target]
    found = f"energy offset (mean of E_pred - E_ref): {offset['mean']:+.4g} {unit} ± {offset['standard_error']:.2g}"
    if offset["removed"]:
        return f"{found}: removed from the label (--keep-offset counts it as error)"
    if offset["significant"]:
        return f"{found}: significant, kept as error (--keep-offset)"
    return f"{found}: not significant, nothing removed"


def cmd_evaluate(args):
    from probe_base.workflow.evaluate import evaluate_probe, metrics_table, write_evaluation

    if args.chemiscope:
        from probe_base.report.chemiscope import require_chemiscope

        require_chemiscope(args.chemiscope)  # fail before the evaluation, not after
    evaluation = evaluate_probe(
        args.probe, args.store, n_bootstrap=args.bootstrap, allow_mismatch=args.allow_backbone_mismatch
    )
    print(
        f"{evaluation['n_structures']} structures, {100 * evaluation['unreliable_fraction']:.1f}% "
        f"unreliable ({evaluation['label']['target']} error > {evaluation['label']['threshold']:.4g})"
    )
    print(metrics_table(evaluation))
    if evaluation.get("selective"):
        from probe_base.workflow.calibrate import format_selective

        print(format_selective(evaluation["selective"]))
    folder = write_evaluation(evaluation, args.output_dir)
    print(f"metrics and plots in {folder}; the report: {folder / 'report.html'}")
    if args.chemiscope:
        from probe_base.report.chemiscope import chemiscope_from_evaluation

        missing = chemiscope_from_evaluation(evaluation, args.chemiscope)
        print(f"wrote {args.chemiscope}" + (f" (the map only: {missing})" if missing else ""))


def cmd_predict(args):
    from probe_base.artifact import load_probe
    from probe_base.workflow.predict import predict_file

    adapter = _adapter(args, args.model)
    collector = None
    if args.chemiscope:
        from probe_base.report.chemiscope import PredictionCollector

        collector = PredictionCollector(args.chemiscope)  # checks before the run
    artifact = load_probe(args.probe)
    annotated = predict_file(
        args.probe,
        adapter,
        args.input,
        args.output,
        args.index,
        args.batch_size,
        args.allow_backbone_mismatch,
        on_batch=collector,
        artifact=artifact,
    )
    flagged = sum(a.info["probe_unreliable"] for a in annotated)
    outside = sum(not a.info["probe_in_domain"] for a in annotated)
    print(
        f"scored {len(annotated)} structures: {flagged} flagged unreliable ({outside} of them outside the "
        f"backbone's domain; rule: {artifact.decision.describe()}); wrote {args.output}"
    )
    if args.chemiscope:
        from probe_base.report.chemiscope import chemiscope_from_predictions

        print(f"wrote {chemiscope_from_predictions(annotated, collector, args.chemiscope)}")


def cmd_calibrate(args):
    from probe_base.errors import ProbeError
    from probe_base.selective import min_calibration_size
    from probe_base.workflow.calibrate import calibrate_probe

    output = args.probe if args.overwrite else args.output
    control = calibrate_probe(
        args.probe,
        args.store,
        args.target_risk,
        args.delta,
        args.method,
        output,
        args.calibration_fraction,
        args.seed,
        args.allow_backbone_mismatch,
    )
    if args.method == "sgr":
        print(f"guarantee: selective risk <= {args.target_risk:g} with probability >= {1 - args.delta:g} (SGR)")
    else:
        print(f"guarantee: expected rate of accepted-and-unreliable predictions <= {args.target_risk:g} (CRC)")
    if control.achievable:
        print(
            f"threshold P(reliable) >= {control.threshold:.4g}: calibration coverage "
            f"{100 * control.coverage:.1f}% ({control.n_accepted}/{control.n_calibration}), "
            f"selective risk {100 * control.risk:.1f}%"
            + (f", bound {100 * control.risk_bound:.1f}%" if control.risk_bound is not None else "")
        )
    else:
        needed = min_calibration_size(args.target_risk, args.delta) if args.method == "sgr" else 0
        hint = (
            f" (SGR needs >= {needed} calibration structures even if all are reliable)"
            if control.n_calibration < needed
            else ""
        )
        raise ProbeError(
            f"no threshold meets the target on {control.n_calibration} calibration structures{hint}: "
            f"nothing written, {args.probe} keeps its rule; raise --target-risk or calibrate on more data"
        )
    print(f"wrote {output}")


def cmd_select(args):
    from probe_base.selection import select_file

    adapter = _adapter(args, args.model)
    picked = select_file(
        args.probe,
        adapter,
        args.input,
        args.output,
        args.n,
        args.diverse,
        args.candidate_factor,
        args.index,
        args.batch_size,
        args.allow_backbone_mismatch,
    )
    p = [a.info["probe_reliability"] for a in picked]
    print(
        f"picked {len(picked)} structures (P(reliable) {min(p):.3f} to {max(p):.3f}"
        f"{', diverse' if args.diverse else ''}); wrote {args.output}"
    )


def cmd_demo(args):
    from probe_base.demo import run_demo

    run_demo(args.output_dir, args.backbone, args.members, args.retrain)


COMMANDS = {
    "plugins": cmd_plugins,
    "extract": cmd_extract,
    "fit": cmd_fit,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "calibrate": cmd_calibrate,
    "select": cmd_select,
    "demo": cmd_demo,
    "reference": run_reference,
    "md": run_md,
}
