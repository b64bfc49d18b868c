"""The plugin manager: finds adapters through the ``probe`` entry-point group.

One cached pluggy ``PluginManager`` per process (as simonw/llm does), built on first use.
Each entry point is loaded on its own, so a broken plugin is listed with its error instead
of taking ``probe plugins`` down; two plugins registering the same adapter name are both
reported, and asking for that name says which distributions collide.

Plugins that are not installed (the ``probe_base.toy`` adapter of the tests and ``probe
demo --backbone toy``, a notebook's own) are registered in the process with
``register_plugin``; every manager built afterwards has them. ``probe plugins`` lists
installed plugins only.

Set ``PROBE_PLUGINS`` to a comma-separated list of plugin names (entry-point names, or the
names given to ``register_plugin``) to load only those; set it to an empty string to load none.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
from dataclasses import dataclass, field

import pluggy

from probe_base import hookspecs
from probe_base.errors import ProbeError

ENTRY_POINT_GROUP = "probe"
PLUGINS_ENV_VAR = "PROBE_PLUGINS"
IN_PROCESS = "(registered in this process)"  # the distribution shown for register_plugin's plugins

_registered: dict[str, object] = {}  # register_plugin's plugins by name, for every manager


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    adapter_class: type
    plugin: str
    distribution: str
    version: str


@dataclass
class PluginProblems:
    """What went wrong while loading plugins: ``broken`` plugin name -> error, and
    ``collisions`` adapter name -> the plugins (distribution, plugin) registering it."""

    broken: dict[str, str] = field(default_factory=dict)
    collisions: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def _allowed_plugin_names():
    value = os.environ.get(PLUGINS_ENV_VAR)
    if value is None:
        return None
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager (rebuilt only if ``PROBE_PLUGINS`` changes)."""
    return _manager(_allowed_plugin_names())


@functools.lru_cache(maxsize=8)
def _manager(allowed) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    pm.probe_problems = PluginProblems()
    pm.probe_distributions = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is not None and entry_point.name not in allowed:
            continue
        if pm.has_plugin(entry_point.name):
            continue  # the same distribution seen twice on sys.path
        try:
            plugin = entry_point.load()
            pm.register(plugin, name=entry_point.name)
        except Exception as exc:  # noqa: BLE001 - any import-time failure of a third-party plugin
            pm.probe_problems.broken[entry_point.name] = f"{type(exc).__name__}: {exc}"
            continue
        dist = entry_point.dist
        pm.probe_distributions[entry_point.name] = (dist.metadata["Name"], dist.version) if dist else ("", "")
    for name, plugin in _registered.items():
        if allowed is not None and name not in allowed:
            continue
        if pm.is_registered(plugin):
            continue  # also installed under an entry point (an older install of the same code)
        if pm.has_plugin(name):
            dist = pm.probe_distributions.get(name, ("", ""))[0]
            pm.probe_problems.broken[name] = (
                f"register_plugin: the name {name!r} is taken by the "
                f"installed plugin of {dist or 'another distribution'}"
            )
            continue
        pm.register(plugin, name=name)
    return pm


def register_plugin(plugin, name=None) -> None:
    """Register a plugin object (a module or object with ``register_adapters``) in this
    process under ``name`` (default: its ``__name__``): the tests' and the demo's toy
    adapter, a notebook's own. Every plugin manager of this process has it from now on,
    unless ``PROBE_PLUGINS`` leaves its name out; registering it again changes nothing."""
    name = name or getattr(plugin, "__name__", None) or str(id(plugin))
    if _registered.get(name) is plugin:
        return
    if name in _registered:
        raise ProbeError(
            f"plugin name {name!r} is already registered in this process by "
            f"{_registered[name]!r}; unregister_plugin({name!r}) first"
        )
    _registered[name] = plugin
    _manager.cache_clear()  # managers built before lack it
    _adapters.cache_clear()


def unregister_plugin(name) -> None:
    """Undo ``register_plugin(plugin, name)`` (a test that registered a plugin of its own)."""
    if _registered.pop(name, None) is not None:
        _manager.cache_clear()
        _adapters.cache_clear()


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str
    missing: bool  # the entry point's module is not on the path


def installed_plugins() -> list[PluginInfo]:
    """The installed (and allowed) plugins from package metadata alone, nothing imported
    (plugin modules import torch: seconds). ``missing`` marks an entry point whose module
    cannot be found; failures at import time show only when the plugins are loaded
    (``available_adapters``, ``plugin_problems``). By convention a plugin is named after
    its adapter."""
    allowed = _allowed_plugin_names()
    found = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if allowed is None or entry_point.name in allowed:
            dist = entry_point.dist
            found.setdefault(
                entry_point.name,
                PluginInfo(
                    entry_point.name,
                    dist.metadata["Name"] if dist else "",
                    dist.version if dist else "",
                    entry_point.module,
                    not _module_exists(entry_point.module),
                ),
            )
    return [found[name] for name in sorted(found)]


def _module_exists(name: str) -> bool:
    """Whether ``name`` can be found, without importing it or its parent packages (a
    plugin's package ``__init__`` may import torch)."""
    from importlib.machinery import PathFinder
    from importlib.util import find_spec

    parts = name.split(".")
    try:
        spec = find_spec(parts[0])
    except (ImportError, ValueError):
        return False
    for depth in range(1, len(parts)):
        if spec is None or spec.submodule_search_locations is None:
            return False
        spec = PathFinder.find_spec(".".join(parts[: depth + 1]), list(spec.submodule_search_locations))
    return spec is not None


def available_adapters(pm: pluggy.PluginManager | None = None) -> dict[str, AdapterInfo]:
    """All adapters of the installed (and allowed) plugins, by adapter name. Where two
    plugins register one name, the first (by plugin name) is kept and the collision is
    in ``plugin_problems()``."""
    return dict(_adapters(pm or get_plugin_manager()))


@functools.lru_cache(maxsize=8)
def _adapters(pm) -> dict[str, AdapterInfo]:
    adapters: dict[str, AdapterInfo] = {}
    problems = pm.probe_problems
    problems.collisions.clear()
    impls = sorted(pm.hook.register_adapters.get_hookimpls(), key=lambda impl: impl.plugin_name)
    for impl in impls:
        registered: list[type] = []
        try:
            impl.function(register=registered.append)
        except Exception as exc:  # noqa: BLE001 - a plugin whose hook fails is listed, not fatal
            problems.broken[impl.plugin_name] = f"register_adapters failed: {type(exc).__name__}: {exc}"
            continue
        distribution, version = pm.probe_distributions.get(impl.plugin_name, (IN_PROCESS, ""))
        for cls in registered:
            info = AdapterInfo(cls.name, cls, impl.plugin_name, distribution, version)
            if cls.name in adapters and adapters[cls.name].adapter_class is not cls:
                first = adapters[cls.name]
                seen = problems.collisions.setdefault(cls.name, [(first.distribution, first.plugin)])
                seen.append((distribution, impl.plugin_name))
                continue
            adapters[cls.name] = info
    return adapters


def plugin_problems(pm: pluggy.PluginManager | None = None) -> PluginProblems:
    pm = pm or get_plugin_manager()
    _adapters(pm)  # collisions are found while registering
    return pm.probe_problems


def get_adapter_class(name: str) -> type:
    """An adapter class by its registered name, or by ``package.module:ClassName``."""
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ProbeError(f"cannot import adapter {name!r}: {exc}") from exc
    adapters = available_adapters()
    problems = plugin_problems()
    if name in problems.collisions:
        who = " and ".join(f"{dist} (plugin {plugin!r})" for dist, plugin in problems.collisions[name])
        raise ProbeError(
            f"adapter name {name!r} is registered by {who}: uninstall one, or choose "
            f"with {PLUGINS_ENV_VAR}=<plugin>, or pass the adapter as module:Class"
        )
    if name not in adapters:
        installed = ", ".join(sorted(adapters)) or "none"
        hint = ""
        if os.environ.get(PLUGINS_ENV_VAR) is not None:
            hint = f" ({PLUGINS_ENV_VAR}={os.environ[PLUGINS_ENV_VAR]!r} restricts loading)"
        if name in problems.broken:
            hint += f"; its plugin failed to load: {problems.broken[name]}"
        raise ProbeError(
            f"no adapter named {name!r}; installed adapters: {installed}{hint}. "
            f"Install its plugin, e.g. `pip install probe-{name}`."
        )
    return adapters[name].adapter_class
