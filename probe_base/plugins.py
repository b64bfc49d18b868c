"""The plugin manager: finds adapters through the ``probe`` entry-point group.

Set ``PROBE_PLUGINS`` to a comma-separated list of plugin (entry-point) names to load
only those; set it to an empty string to load none.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass

import pluggy

from . import hookspecs
from .errors import ProbeError

ENTRY_POINT_GROUP = "probe"
PLUGINS_ENV_VAR = "PROBE_PLUGINS"


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    adapter_class: type
    plugin: str
    distribution: str
    version: str


def _allowed_plugin_names():
    value = os.environ.get(PLUGINS_ENV_VAR)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    allowed = _allowed_plugin_names()
    if allowed is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    else:
        for name in sorted(allowed):
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    return pm


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str


def installed_plugins() -> list[PluginInfo]:
    """The installed (and allowed) plugins from package metadata alone: nothing is imported
    (plugin modules import torch). By convention a plugin is named after its adapter."""
    allowed = _allowed_plugin_names()
    found = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP and (allowed is None or ep.name in allowed):
                found.setdefault(ep.name, PluginInfo(ep.name, dist.metadata["Name"], dist.version))
    return [found[name] for name in sorted(found)]


def available_adapters(pm: pluggy.PluginManager | None = None) -> dict[str, AdapterInfo]:
    """All adapters of the installed (and allowed) plugins, by adapter name."""
    pm = pm or get_plugin_manager()
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    adapters: dict[str, AdapterInfo] = {}
    for plugin_name, plugin in pm.list_name_plugin():
        impl = getattr(plugin, "register_adapters", None)
        if impl is None:
            continue
        registered: list[type] = []
        impl(register=registered.append)
        dist = dists.get(id(plugin))
        distribution = dist.project_name if dist else "(registered in this process)"
        version = dist.version if dist else ""
        for cls in registered:
            adapters[cls.name] = AdapterInfo(cls.name, cls, plugin_name, distribution, version)
    return adapters


def get_adapter_class(name: str) -> type:
    """An adapter class by its registered name, or by ``package.module:ClassName``."""
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ProbeError(f"cannot import adapter {name!r}: {exc}") from exc
    adapters = available_adapters()
    if name not in adapters:
        installed = ", ".join(sorted(adapters)) or "none"
        hint = ""
        if os.environ.get(PLUGINS_ENV_VAR) is not None:
            hint = f" ({PLUGINS_ENV_VAR}={os.environ[PLUGINS_ENV_VAR]!r} restricts loading)"
        raise ProbeError(
            f"no adapter named {name!r}; installed adapters: {installed}{hint}. "
            f"Install its plugin, e.g. `pip install probe-{name}`."
        )
    return adapters[name].adapter_class
