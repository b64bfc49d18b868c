"""The pluggy hook specification: the one hook a backbone plugin implements."""

import pluggy

hookspec = pluggy.HookspecMarker("probe")
hookimpl = pluggy.HookimplMarker("probe")


@hookspec
def register_adapters(register):
    """Register adapter classes: call ``register(AdapterSubclass)`` once per class."""
