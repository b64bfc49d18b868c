"""The backbone a command runs: its adapter from the command line."""

from __future__ import annotations


def backbone_adapter(args, model_paths):
    """The adapter of ``--adapter`` on ``model_paths`` with ``--layers``, ``--device`` and
    every ``--adapter-option``."""
    from probe_base.plugins import get_adapter_class

    options = dict(args.adapter_option)
    return get_adapter_class(args.adapter)(model_paths, layers=args.layers, device=args.device, **options)
