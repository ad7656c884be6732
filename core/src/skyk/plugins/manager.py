"""The kernel's typed facade over pluggy, fed by stevedore entry points.

All ``pm.hook.*`` calls live here, so the rest of the code asks typed
questions ("which clouds?", "which offerings?") and never spells a hook.
Plugins are loaded by kind, and by name when the caller knows which it needs,
so a command imports only what it uses.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pluggy
from stevedore import NamedExtensionManager
from stevedore.extension import ExtensionManager

from skyk import hookspecs
from skyk.errors import CatalogError, PluginError
from skyk.plugins.kinds import BUILTIN, CORE_DISTRIBUTION, GROUPS, disabled_plugins


@dataclass(frozen=True)
class CatalogSource:
    """One cloud plugin's catalog: the files it reads, and reading them."""

    cloud: str
    plugin: object
    _offerings: Callable[..., list]
    _files: Callable[..., list]

    def files(self) -> list[str]:
        """The catalog files the plugin reads, relative to the catalog dir (``skyk_catalog_files``)."""
        return sorted({f for batch in self._files() for f in batch})

    def code_files(self) -> list[Path]:
        """The plugin's own source files: the module and its package's other modules.

        What a plugin makes of its files can change with its code, so a cache
        of what it read is keyed by these as well as by the catalog files.
        """
        module_file = getattr(self.plugin, "__file__", None)
        if not module_file:
            return []
        return sorted(Path(module_file).parent.glob("*.py"))

    def read(self, catalog_dir: Path) -> list:
        """Return the plugin's offerings read from ``catalog_dir``.

        Raises ``CatalogError`` when its catalog is missing or malformed.
        """
        try:
            return [o for batch in self._offerings(catalog_dir=catalog_dir) for o in batch]
        except CatalogError:
            raise
        except (ValueError, KeyError, IndexError) as exc:
            raise CatalogError(f"malformed catalog in {catalog_dir}: {_describe(exc)}") from None


@dataclass(frozen=True)
class PluginInfo:
    """One plugin as ``skyk plugins`` reports it."""

    kind: str
    name: str
    target: str
    error: str | None = None
    disabled: bool = False

    # Looked up only when asked: finding a plugin's distribution reads every
    # installed distribution's metadata, which a dry run does not need.
    @property
    def distribution(self) -> str:
        """The installed distribution that ships the plugin (``?`` if none does)."""
        return _owner(self.kind, self.name, self.target)[0]

    @property
    def version(self) -> str:
        """That distribution's version (``?`` if unknown)."""
        return _owner(self.kind, self.name, self.target)[1]

    @property
    def status(self) -> str:
        """Return ``ok``, ``disabled`` or ``error: ...``."""
        if self.disabled:
            return "disabled"
        return f"error: {self.error}" if self.error else "ok"


@lru_cache(maxsize=1)
def _entry_point_owners() -> dict[tuple[str, str, str], tuple[str, str]]:
    """Map (group, name, target) to the (distribution, version) declaring it.

    Scans installed distributions, so it runs only when a report or an error
    needs to name a plugin's distribution.
    """
    owners: dict[tuple[str, str, str], tuple[str, str]] = {}
    wanted = set(GROUPS.values())
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group in wanted:
                owners.setdefault((ep.group, ep.name, ep.value),
                                  (dist.metadata["Name"], dist.version))
    return owners


def _owner(kind: str, name: str, target: str) -> tuple[str, str]:
    if (kind, name, target) in {(k, n, m) for k, n, m in BUILTIN}:
        from skyk import __version__

        return CORE_DISTRIBUTION, __version__
    return _entry_point_owners().get((GROUPS[kind], name, target), ("?", "?"))


def discover(kind: str) -> list[tuple[str, str]]:
    """List (name, target) of every plugin of ``kind``, built-in first, importing nothing."""
    listing = ExtensionManager.__new__(ExtensionManager)
    listing.namespace = GROUPS[kind]
    found = [(n, m) for k, n, m in BUILTIN if k == kind]
    return found + [(ep.name, ep.value) for ep in listing.list_entry_points()]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class Kernel:
    """Loaded plugins of some kinds, and typed calls of their hooks.

    Build one with :meth:`load`; there is no module-level plugin manager.
    """

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._infos: list[PluginInfo] = []
        # plugin registration name -> (kind, name, target), for error messages
        self._origin: dict[str, tuple[str, str, str]] = {}

    @classmethod
    def load(cls, kinds: Iterable[str] = ("cloud",), names: Iterable[str] | None = None) -> Kernel:
        """Discover and register the plugins of ``kinds``.

        :param kinds: plugin kinds to load (keys of ``skyk.plugins.kinds.GROUPS``).
        :param names: when given, only plugins with these names are imported.
        Plugins blocked by ``SKYK_DISABLE_PLUGINS`` are listed but never imported.
        A plugin that fails to import is recorded in :attr:`failures`.
        """
        kernel = cls()
        wanted = {n.lower() for n in names} if names is not None else None
        blocked = disabled_plugins()
        for kind in kinds:
            kernel._load_kind(kind, wanted, blocked)
        return kernel

    def _load_kind(self, kind: str, wanted: set[str] | None, blocked: frozenset[str]) -> None:
        group = GROUPS[kind]
        candidates = discover(kind)
        self._reject_duplicate_names(kind, candidates)

        to_import: list[str] = []
        for name, target in candidates:
            if wanted is not None and name.lower() not in wanted:
                continue
            if name.lower() in blocked:
                self._record(kind, name, target, disabled=True)
                continue
            if (kind, name, target) in {(k, n, m) for k, n, m in BUILTIN}:
                self._register_builtin(kind, name, target)
            else:
                to_import.append(name)
        if not to_import:
            return

        def failed(_manager: Any, ep: importlib.metadata.EntryPoint, exc: BaseException) -> None:
            self._record(kind, ep.name, ep.value, error=_describe(exc))

        manager = NamedExtensionManager(group, names=to_import, name_order=True,
                                        on_load_failure_callback=failed)
        for ext in manager.extensions:
            self._register(kind, ext.name, ext.entry_point.value, ext.plugin)

    def _register_builtin(self, kind: str, name: str, module: str) -> None:
        self._register(kind, name, module, importlib.import_module(module))

    def _register(self, kind: str, name: str, target: str, plugin: object) -> None:
        reg_name = f"{kind}:{name}"
        try:
            self._pm.register(plugin, name=reg_name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._record(kind, name, target, error=_describe(exc))
            return
        self._origin[reg_name] = (kind, name, target)
        self._record(kind, name, target)

    def _record(self, kind: str, name: str, target: str, error: str | None = None,
                disabled: bool = False) -> None:
        self._infos.append(PluginInfo(kind, name, target, error, disabled))

    def _reject_duplicate_names(self, kind: str, candidates: list[tuple[str, str]]) -> None:
        seen: dict[str, str] = {}
        for name, target in candidates:
            key = name.lower()
            if key in seen and seen[key] != target:
                first, second = (self._who(kind, name, t) for t in (seen[key], target))
                raise PluginError(
                    f"two {kind} plugins are named '{name}': {first} and {second}",
                    hint=f"uninstall one of them, or block one with SKYK_DISABLE_PLUGINS={name}",
                )
            seen[key] = target

    def _who(self, kind: str, name: str, target: str) -> str:
        dist, version = _owner(kind, name, target)
        return f"{target} from {dist} {version}"

    # ---------------------------------------------------------------- reports

    @property
    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or not, in discovery order."""
        return list(self._infos)

    @property
    def failures(self) -> list[PluginInfo]:
        """Plugins that were found but could not be loaded."""
        return [i for i in self._infos if i.error]

    @property
    def loaded_names(self) -> list[str]:
        """Names of the plugins registered with pluggy (``kind:name``)."""
        return [name for name, _ in self._pm.list_name_plugin()]

    # ---------------------------------------------------------------- catalog

    def catalog_sources(self) -> list[CatalogSource]:
        """Return each loaded cloud plugin's catalog, to be read separately.

        One cloud's broken catalog must not hide the others, so each source
        calls ``skyk_catalog_offerings`` on its own plugin only.
        """
        sources = []
        for reg_name, plugin in self._pm.list_name_plugin():
            kind, name, _ = self._origin[reg_name]
            if kind != "cloud":
                continue
            others = [p for n, p in self._pm.list_name_plugin() if n != reg_name]
            sources.append(CatalogSource(
                name, plugin, self._pm.subset_hook_caller("skyk_catalog_offerings", others),
                self._pm.subset_hook_caller("skyk_catalog_files", others)))
        return sources

    def offerings_by_cloud(self, catalog_dir: Path) -> tuple[dict[str, list], dict[str, str]]:
        """Read every cloud plugin's catalog from ``catalog_dir``, uncached.

        :return: (offerings by cloud plugin name, catalog error by cloud plugin
            name). A cloud whose catalog is missing or malformed contributes an
            error line instead of offerings, and the others keep working.
        """
        offerings: dict[str, list] = {}
        errors: dict[str, str] = {}
        for source in self.catalog_sources():
            try:
                offerings[source.cloud] = source.read(catalog_dir)
            except CatalogError as exc:
                errors[source.cloud] = exc.one_line()
        return offerings, errors

    def catalog_files(self) -> list[str]:
        """Return every catalog file the loaded cloud plugins read, relative paths."""
        return sorted({f for batch in self._pm.hook.skyk_catalog_files() for f in batch})

    # ---------------------------------------------------------- named objects

    def clouds(self) -> dict[str, Any]:
        """Return the registered clouds by name (``skyk_clouds``)."""
        return self._named("skyk_clouds", "cloud")

    def stores(self) -> dict[str, Any]:
        """Return the object stores of the loaded cloud plugins, by name."""
        return self._named("skyk_stores", "store")

    def runtimes(self) -> dict[str, Any]:
        """Return the registered inference runtimes by name (``skyk_runtimes``)."""
        return self._named("skyk_runtimes", "runtime")

    def scaling_policies(self) -> dict[str, Any]:
        """Return the registered autoscaling policies by name."""
        return self._named("skyk_scaling_policies", "scaling policy")

    def load_balancing_policies(self) -> dict[str, Any]:
        """Return the registered load-balancing policies by name."""
        return self._named("skyk_load_balancing_policies", "load-balancing policy")

    def recovery_strategies(self) -> dict[str, Any]:
        """Return the registered recovery strategies of managed jobs by name."""
        return self._named("skyk_recovery_strategies", "recovery strategy")

    def _named(self, hook_name: str, what: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        owner: dict[str, str] = {}
        hook = getattr(self._pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            for obj in impl.function() or ():
                name = obj.name
                source = self._describe_plugin(impl.plugin_name)
                if name in found:
                    raise PluginError(
                        f"two plugins provide the {what} '{name}': {owner[name]} and {source}",
                        hint="uninstall one of them, or block one with SKYK_DISABLE_PLUGINS",
                    )
                found[name] = obj
                owner[name] = source
        return found

    def _describe_plugin(self, reg_name: str) -> str:
        kind, name, target = self._origin[reg_name]
        dist, version = _owner(kind, name, target)
        return f"plugin '{name}' ({dist} {version})"
