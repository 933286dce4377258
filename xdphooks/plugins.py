"""Plugin discovery: entry points and drop-in folders, each plugin isolated.

Drop-ins, like systemd units and kernel-install plugins:

- ``<libdir>/plugins/NAME.py``   — installed by packages;
- ``/etc/xdphooks/plugins/NAME.py`` — the admin's: same name overrides the
  package's file; a symlink to ``/dev/null`` masks it.

Entry points: group ``xdphooks``, the entry point's name is the plugin name;
a drop-in of the same name wins. A plugin that fails to import, raises, hangs
or returns bad data is recorded in :attr:`Plugins.failures` by name and left
out; it never takes the others down.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pluggy

from . import hookspecs
from .errors import XdphooksError
from .model import Problem, XdpProgram, program_problems
from .paths import Paths
from .security import check_trusted_file, read_trusted

ENTRY_POINT_GROUP = "xdphooks"


@dataclass(frozen=True)
class Failure:
    plugin: str
    reason: str
    fix: str = ""

    def __str__(self) -> str:
        fix = f" — fix: {self.fix}" if self.fix else ""
        return f"plugin {self.plugin!r}: {self.reason}{fix}"


@dataclass
class Plugins:
    pm: pluggy.PluginManager
    sources: dict[str, str] = field(default_factory=dict)  # plugin name -> file or entry point
    failures: list[Failure] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    timeout: float = 10.0

    def call_each(self, hook: str, kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
        """Call ``hook`` on every plugin separately, guarded; returns (plugin, result)
        for the implementations that returned, so results can be blamed on a plugin
        (pluggy's own call returns them without names)."""
        out = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            guarded: _Guarded = impl.function  # every implementation is, see _register()
            ok, value = guarded.call(*(kwargs[k] for k in impl.argnames))
            if ok:
                out.append((guarded.plugin, value))
        return out

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Fire an after-the-fact hook through pluggy; failures are reported, never raised."""
        getattr(self.pm.hook, hook)(**kwargs)

    def programs(self) -> tuple[list[tuple[str, XdpProgram]], set[str]]:
        """All declared programs with their plugin, and the plugins that failed to declare."""
        found: list[tuple[str, XdpProgram]] = []
        broken: set[str] = {f.plugin for f in self.failures}
        for plugin, result in self.call_each("xdphooks_programs", {}):
            reason = _bad_programs(result)
            if reason:
                self.failures.append(Failure(plugin, f"xdphooks_programs() returned bad data: "
                                             f"{reason}", "return a list of XdpProgram"))
                broken.add(plugin)
                continue
            found.extend((plugin, p) for p in result)
        broken |= {f.plugin for f in self.failures}
        return found, broken

    def validate(self, interface, chain) -> list[Problem]:
        problems: list[Problem] = []
        for plugin, result in self.call_each("xdphooks_validate_chain",
                                             {"interface": interface, "chain": chain}):
            if result is None:
                continue
            if not isinstance(result, (list, tuple)) or not all(isinstance(p, Problem)
                                                                for p in result):
                self.failures.append(Failure(plugin, "xdphooks_validate_chain() must return "
                                             "None or a list of veto()/warn() problems"))
                continue
            problems.extend(Problem(p.severity, p.plugin or plugin, p.message, p.fix)
                            for p in result)
        return problems

    def select_mode(self, interface, chain, probed: str) -> str | None:
        # pluggy's firstresult: the first non-None answer, in pluggy's call order; an
        # implementation that fails counts as None (and is reported).
        return self.pm.hook.xdphooks_select_mode(interface=interface, chain=chain,
                                                 probed=probed)


class _Guarded:
    """One plugin's implementation of one hook, run under the time limit.

    Installed as the ``HookImpl.function`` pluggy calls, so calls through pluggy
    (firstresult, notifications) and :meth:`Plugins.call_each` are guarded alike:
    a failure is recorded in :attr:`Plugins.failures` by plugin name and the
    implementation counts as having returned ``None``.
    """

    def __init__(self, plugins: Plugins, plugin: str, hook: str, fn: Callable[..., Any]):
        self.plugins, self.plugin, self.hook, self.fn = plugins, plugin, hook, fn

    def call(self, *args: Any) -> tuple[bool, Any]:
        ok, value = _guarded(lambda: self.fn(*args), self.plugins.timeout)
        if not ok:
            self.plugins.failures.append(Failure(self.plugin, f"{self.hook}() {value}",
                                                 "fix or remove the plugin, or disable it "
                                                 f"with --disable {self.plugin}"))
        return ok, value

    def __call__(self, *args: Any) -> Any:
        ok, value = self.call(*args)
        return value if ok else None


def _bad_programs(result: Any) -> str:
    if not isinstance(result, (list, tuple)):
        return f"expected a list, got {type(result).__name__}"
    for item in result:
        if not isinstance(item, XdpProgram):
            return f"item {item!r} is not an XdpProgram"
        problems = program_problems(item)
        if problems:
            return f"{item.name!r}: {'; '.join(problems)}"
    return ""


def _guarded(fn: Callable[[], Any], timeout: float) -> tuple[bool, Any]:
    """Run plugin code with a time limit; a hung plugin is abandoned (daemon thread)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - plugin code may raise anything
            box["error"] = f"raised {type(e).__name__}: {e}"

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return False, f"did not return within {timeout:g} s (hung?)"
    if "error" in box:
        return False, box["error"]
    return True, box.get("value")


def discover(paths: Paths, disable: frozenset[str] | set[str] = frozenset(),
             timeout: float = 10.0, entry_points: bool = True) -> Plugins:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    disable = set(disable) | {n for n in os.environ.get("XDPHOOKS_DISABLE", "").split(",") if n}
    plugins = Plugins(pm, timeout=timeout)
    for name in sorted(disable):
        pm.set_blocked(name)
    plugins.disabled = sorted(disable)

    files = _drop_ins(paths, plugins)
    if entry_points and not os.environ.get("XDPHOOKS_DISABLE_ENTRY_POINTS"):
        _load_entry_points(pm, plugins, skip=set(files) | set(plugins.masked))
    for name, path in sorted(files.items()):
        if pm.is_blocked(name):
            continue
        # Read what was checked: no symlink, root's, not writable by others — checked on
        # the opened file, so a file swapped in after _drop_ins() is refused, not run.
        try:
            source = read_trusted(path, "plugin file", plugin=name)
        except FileNotFoundError:  # removed since it was listed: gone, not broken
            continue
        except XdphooksError as e:
            plugins.failures.append(Failure(name, e.message, e.fix))
            continue
        except OSError as e:
            plugins.failures.append(Failure(name, f"cannot read {path}: {e.strerror}",
                                            f"reinstall it, or mask it with ln -s /dev/null "
                                            f"{paths.admin_plugin_dir}/{name}.py"))
            continue
        ok, value = _guarded(lambda: _import_file(name, path, source), timeout)
        if not ok and not os.path.lexists(path):
            continue  # removed since it was listed: gone, not broken; its removal reconciles
        if not ok:
            plugins.failures.append(Failure(name, f"cannot be loaded from {path}: import {value}",
                                            f"fix {path}, or mask it with "
                                            f"ln -s /dev/null {paths.admin_plugin_dir}/{name}.py"))
            continue
        _register(pm, plugins, name, value, str(path))
    return plugins


def _drop_ins(paths: Paths, plugins: Plugins) -> dict[str, Path]:
    chosen: dict[str, Path] = {}
    for d in (paths.plugin_dir, paths.admin_plugin_dir):  # later wins
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        for entry in entries:
            if not entry.name.endswith(".py") or entry.name.startswith("."):
                continue
            name = entry.name[:-3]
            path = Path(entry.path)
            if entry.is_symlink() and os.readlink(path) == "/dev/null":
                if d == paths.admin_plugin_dir:
                    chosen.pop(name, None)
                    plugins.masked.append(name)
                    continue
            try:
                check_trusted_file(path, "plugin file", plugin=name)
            except FileNotFoundError:  # removed while we looked (a package going away)
                continue
            except XdphooksError as e:
                plugins.failures.append(Failure(name, e.message, e.fix))
                chosen.pop(name, None)
                continue
            chosen[name] = path
    for name in plugins.masked:
        chosen.pop(name, None)
    return chosen


def _import_file(name: str, path: Path, source: bytes) -> ModuleType:
    """Run ``source`` (the checked bytes of ``path``) as module ``xdphooks_plugin_NAME``."""
    modname = f"xdphooks_plugin_{name.replace('-', '_')}"
    spec = importlib.util.spec_from_loader(modname, loader=None, origin=str(path))
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules[modname] = module
    try:
        exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return module


def _entry_points() -> list[tuple[str, str, str]]:
    """(name, "module:attr", distribution) for group ``xdphooks``.

    Reads ``*.dist-info/entry_points.txt`` on sys.path directly: the same data
    importlib.metadata reads, at a fraction of the start-up cost (triggers run
    this on every package transaction).
    """
    out, seen = [], set()
    for base in sys.path:
        try:
            entries = os.scandir(base or ".")
        except OSError:
            continue
        with entries:
            for d in entries:
                if not d.name.endswith((".dist-info", ".egg-info")):
                    continue
                try:
                    text = Path(d.path, "entry_points.txt").read_text()
                except OSError:
                    continue
                if f"[{ENTRY_POINT_GROUP}]" not in text:
                    continue
                dist = d.name.rsplit("-", 1)[0]
                section = None
                for line in text.splitlines():
                    line = line.strip()
                    if line.startswith("["):
                        section = line.strip("[]").strip()
                    elif section == ENTRY_POINT_GROUP and "=" in line:
                        name, _, value = (x.strip() for x in line.partition("="))
                        if name not in seen:
                            seen.add(name)
                            out.append((name, value, dist))
    return out


def _load_entry_point(value: str):
    module, _, attr = value.partition(":")
    obj = importlib.import_module(module.strip())
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


def _load_entry_points(pm: pluggy.PluginManager, plugins: Plugins, skip: set[str]) -> None:
    for name, value, dist in _entry_points():
        if name in skip or pm.is_blocked(name):
            continue
        ok, obj = _guarded(lambda: _load_entry_point(value), plugins.timeout)
        if not ok:
            plugins.failures.append(Failure(name, f"entry point {value} cannot be loaded: {obj}",
                                            f"fix or uninstall {dist}"))
            continue
        _register(pm, plugins, name, obj, f"entry point {value} ({dist})")


def _register(pm: pluggy.PluginManager, plugins: Plugins, name: str, obj: Any, source: str) -> None:
    try:
        pm.register(obj, name=name)
        pm.check_pending()
    except Exception as e:  # pluggy's PluginValidationError and friends
        _unregister(pm, name)
        plugins.failures.append(Failure(name, f"invalid hook implementation: {e}",
                                        "check the hook names and arguments against "
                                        "xdphooks.hookspecs"))
        return
    impls = [(caller.name, impl) for caller in pm.get_hookcallers(obj) or ()
             for impl in caller.get_hookimpls() if impl.plugin is obj]
    wrappers = sorted(hook for hook, impl in impls
                      if impl.hookwrapper or getattr(impl, "wrapper", False))  # 1.0: no .wrapper
    if wrappers:
        _unregister(pm, name)
        plugins.failures.append(Failure(
            name, f"{', '.join(wrappers)}: hook wrappers (wrapper=True, hookwrapper=True) are "
            "not supported; xdphooks calls each plugin's implementation on its own, with a "
            "time limit", "drop wrapper=True/hookwrapper=True from @hookimpl and return the "
            "hook's result"))
        return
    for hook, impl in impls:
        impl.function = _Guarded(plugins, name, hook, impl.function)
    plugins.sources[name] = source


def _unregister(pm: pluggy.PluginManager, name: str) -> None:
    try:
        pm.unregister(name=name)
    except Exception:  # noqa: BLE001 - not registered (or half): nothing to undo
        pass
