"""Plugin discovery: entry points and drop-in folders; plugin code runs in a plugin host.

Drop-ins, like systemd units and kernel-install plugins:

- ``<libdir>/plugins/NAME.py``   — installed by packages;
- ``/etc/xdphooks/plugins/NAME.py`` — the admin's: same name overrides the
  package's file; a symlink to ``/dev/null`` masks it.  A mask obeys the same
  trust rules as a plugin file (the link root's, in root-owned directories not
  writable by others); an untrusted one is refused with a warning and masks
  nothing.

Entry points: group ``xdphooks``, the entry point's name is the plugin name;
a drop-in of the same name wins.

Finding the plugins and checking the files is the coordinator's own work, done
here; running them is not: every import and every hook call runs in a child
process (:mod:`xdphooks.pluginhost`) under ``hook_timeout``, and results come
back as data, validated here.  A plugin that fails to import, raises, hangs,
kills its host or returns bad data is recorded in :attr:`Plugins.failures` by
name and left out; it never takes the others down: the host is killed and a
fresh one carries on with the other plugins.
"""

from __future__ import annotations

import base64
import os
import stat
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import pluginhost
from .errors import XdphooksError, fix_suffix
from .model import Problem, XdpProgram, program_problems
from .paths import Paths
from .security import check_trusted_dirs, check_trusted_file, read_trusted
from .text import one_line

ENTRY_POINT_GROUP = "xdphooks"


@dataclass(frozen=True)
class Failure:
    plugin: str
    reason: str
    fix: str = ""
    #: the plugin is broken (it could not load or declare): its programs are unknown.
    #: False for a warning about it that leaves it running as before (a refused mask)
    breaks: bool = True

    def __str__(self) -> str:
        return f"plugin {self.plugin!r}: {self.reason}{fix_suffix(self.fix)}"


def _fix_for(name: str) -> str:
    return f"fix or remove the plugin, or disable it with --disable {name}"


@dataclass
class Plugins:
    sources: dict[str, str] = field(default_factory=dict)  # plugin name -> file or entry point
    failures: list[Failure] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    timeout: float = 10.0
    #: loaded plugins, in load order: name -> the host's load request (to load it again
    #: in a fresh host) and the hooks it implements
    _loaded: dict[str, tuple[dict, frozenset[str]]] = field(default_factory=dict)
    _slot: "_HostSlot" = field(default_factory=lambda: _HostSlot())

    def __post_init__(self) -> None:
        weakref.finalize(self, self._slot.close)  # the host ends with its Plugins

    # -- the public surface the coordinator and the planner use

    def implements(self, hook: str) -> bool:
        return any(hook in hooks for _, hooks in self._loaded.values())

    def programs(self) -> tuple[list[tuple[str, XdpProgram]], set[str]]:
        """All declared programs with their plugin, and the plugins that failed to declare."""
        found: list[tuple[str, XdpProgram]] = []
        broken = self._broken()
        for plugin, result in self._call_each("xdphooks_programs", {}):
            reason = _bad_programs(result)
            if reason:
                self._fail(plugin, f"xdphooks_programs() returned bad data: {reason}",
                           "return a list of XdpProgram")
                broken.add(plugin)
                continue
            found.extend((plugin, p) for p in result)
        return found, broken | self._broken()

    def validate(self, interface, chain) -> list[Problem]:
        problems: list[Problem] = []
        for plugin, result in self._call_each("xdphooks_validate_chain",
                                               {"interface": interface, "chain": chain}):
            if result is None:
                continue
            if not isinstance(result, tuple) or not all(_good_problem(p) for p in result):
                self._fail(plugin, "xdphooks_validate_chain() must return None or a list of "
                           "veto()/warn() problems")
                continue
            problems.extend(Problem(p.severity, p.plugin or plugin, one_line(p.message),
                                    one_line(p.fix)) for p in result)
        return problems

    def select_mode(self, interface, chain, probed: str) -> str | None:
        # pluggy's firstresult, in pluggy's call order (the host's pluggy says which):
        # the first non-None answer; an implementation that fails counts as None.
        for plugin in self._order("xdphooks_select_mode"):
            ok, value = self._call(plugin, "xdphooks_select_mode",
                                   {"interface": interface, "chain": chain, "probed": probed})
            if ok and value is not None and not isinstance(value, str):
                self._fail(plugin, f"xdphooks_select_mode() returned "
                           f"{getattr(value, 'reason', type(value).__name__)}, not a mode "
                           "name or None", _fix_for(plugin))
            elif ok and value is not None:
                return value
        return None

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Fire an after-the-fact hook on every plugin; failures are reported, never raised."""
        for plugin in self._order(hook):
            self._call(plugin, hook, kwargs)

    def prog_arrays(self, interface, program: str, programs: Mapping[str, int],
                    arrays: Mapping[str, int]) -> None:
        """``xdphooks_prog_arrays``: the fds are passed to the host (SCM_RIGHTS)."""
        fds = list(programs.values()) + list(arrays.values())
        slots = {"programs": {n: i for i, n in enumerate(programs)},
                 "arrays": {n: len(programs) + i for i, n in enumerate(arrays)}}
        for plugin in self._order("xdphooks_prog_arrays"):
            self._call(plugin, "xdphooks_prog_arrays",
                       {"interface": interface, "program": program}, fds, slots)

    def close(self) -> None:
        self._slot.close()

    # -- calls into the host

    def _broken(self) -> set[str]:
        return {f.plugin for f in self.failures if f.breaks}

    def _fail(self, plugin: str, reason: str, fix: str = "") -> None:
        self.failures.append(Failure(plugin, one_line(reason), fix))

    def _call_each(self, hook: str, kwargs: dict) -> list[tuple[str, Any]]:
        out = []
        for plugin in self._order(hook):
            ok, value = self._call(plugin, hook, kwargs)
            if ok:
                out.append((plugin, value))
        return out

    def _order(self, hook: str) -> list[str]:
        """The plugins implementing ``hook``, in pluggy's call order."""
        mine = [n for n, (_, hooks) in self._loaded.items() if hook in hooks]
        if not mine:
            return []
        host = self._host()
        try:
            reply = host.request({"op": "order", "hook": hook}, self.timeout)
        except pluginhost.HostDied:  # no plugin code was called: take the load order
            self._blame_threads(host, "", f"between calls (asked for {hook}())")
            self._slot.drop()
            return [n for n in mine if n in self._loaded]
        said = reply.get("ok") if isinstance(reply.get("ok"), list) else []
        return [n for n in said if n in mine] + [n for n in mine if n not in said]

    def _call(self, plugin: str, hook: str, kwargs: dict, fds: list[int] = (),
              slots: dict | None = None, again: bool = False) -> tuple[bool, Any]:
        msg = {"op": "call", "plugin": plugin, "hook": hook,
               "args": pluginhost.encode(kwargs), "fds": slots or {}}
        host = self._host()
        if plugin not in self._loaded:  # it killed a host earlier: gone for this run
            return False, None
        try:
            reply = host.request(msg, self.timeout, fds)
        except pluginhost.HostDied as e:
            if e.stalled and not again and self._blame_threads(
                    host, plugin, f"before {hook}() of plugin {plugin!r} could run"):
                return self._call(plugin, hook, kwargs, fds, slots, again=True)
            self._died(plugin, f"{hook}() {e}", host)
            return False, None
        if "error" in reply:
            self._fail(plugin, f"{hook}() {reply['error']}", _fix_for(plugin))
            return False, None
        if "bad" in reply:
            return True, _Bad(one_line(reply["bad"]))
        try:
            return True, pluginhost.decode(reply.get("ok"), _RESULT_TYPES)
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:
            return True, _Bad(f"{type(e).__name__}: {one_line(e)}")

    def _blame_threads(self, host: pluginhost.Host, plugin: str, when: str) -> bool:
        """The host stalled before ``plugin``'s code ran: the plugins with a thread still
        running are to blame, not it. True if there were any (they are left out)."""
        guilty = sorted(t for t in host.threaded - {plugin} if t in self._loaded)
        for name in guilty:
            self._fail(name, f"left a thread running that stalled the plugin host {when} "
                       "(killed)", _fix_for(name))
            self._loaded.pop(name, None)
        if guilty:
            self._slot.drop()
        return bool(guilty)

    def _died(self, plugin: str, reason: str, host: pluginhost.Host) -> None:
        said = host.last_output()
        tail = f"; its last output: {one_line(said, 160)}" if said else ""
        self._fail(plugin, reason + tail, _fix_for(plugin))
        self._loaded.pop(plugin, None)  # later calls go to a fresh host, without it
        self._slot.drop()

    def _host(self) -> pluginhost.Host:
        """The running host; a fresh one (with every plugin still loaded loaded again)
        after one was killed."""
        while self._slot.host is None:
            again = list(self._loaded.items())
            self._loaded.clear()
            try:
                early = None if self._slot.started else pluginhost.take_prestarted()
                self._slot.host = early or pluginhost.Host(fresh=self._slot.started)
            except pluginhost.HostDied as e:  # no plugin code ran: nothing works
                self._slot.host = pluginhost.Host.failed(f"the plugin host did not start: {e}")
                for name, _ in again:
                    self._fail(name, f"cannot be loaded again: the plugin host did not start "
                               f"({e})", "see the plugin host's error above; report it")
                again = []
            self._slot.started = True
            for name, (request, _) in again:  # one that kills this host too is left out
                self._load(name, request, again=True)
        return self._slot.host

    def _load(self, name: str, request: dict, again: bool = False) -> bool:
        """Load one plugin into the host; False (and a failure recorded) if it cannot be."""
        host = self._host()
        try:
            reply = host.request(request, self.timeout)
        except pluginhost.HostDied as e:
            if e.stalled and not again and self._blame_threads(
                    host, name, f"before plugin {name!r} could be loaded"):
                return self._load(name, request, again=True)
            said = host.last_output()
            tail = f"; its last output: {one_line(said, 160)}" if said else ""
            self._slot.drop()
            self._load_failed(name, request, f"import {e}{tail}", again)
            return False
        if "ok" in reply:
            hooks = reply["ok"] if isinstance(reply["ok"], list) else []
            self._loaded[name] = (request, frozenset(h for h in hooks if isinstance(h, str)))
            return True
        error = str(reply.get("error", "failed"))
        stage = reply.get("stage")
        if stage == "register":
            self._fail(name, error, "check the hook names and arguments against "
                       "xdphooks.hookspecs")
        elif stage == "wrapper":
            self._fail(name, f"{error}: hook wrappers (wrapper=True, hookwrapper=True) are "
                       "not supported; xdphooks calls each plugin's implementation on its "
                       "own, with a time limit", "drop wrapper=True/hookwrapper=True from "
                       "@hookimpl and return the hook's result")
        else:
            self._load_failed(name, request, f"import {error}", again)
        return False

    def _load_failed(self, name: str, request: dict, what: str, again: bool) -> None:
        if "path" in request:
            path = request["path"]
            if not os.path.lexists(path):
                return  # removed since it was listed: gone, not broken; its removal reconciles
            self._fail(name, f"cannot be loaded from {path}: {what}"
                       + (" (loading it again in a fresh plugin host)" if again else ""),
                       f"fix {path}, or mask it with ln -s /dev/null {request['mask']}")
        else:
            self._fail(name, f"entry point {request['entry']} cannot be loaded: {what}",
                       f"fix or uninstall {request['dist']}")


class _HostSlot:
    """The current host of one :class:`Plugins` (kept apart so that ending the host
    when the Plugins object goes needs no reference to it)."""

    def __init__(self) -> None:
        self.host: pluginhost.Host | None = None
        self.started = False  # a host ran before: the next one is a fresh interpreter

    def drop(self) -> None:
        if self.host is not None:
            self.host.kill()
            self.host = None

    close = drop


@dataclass(frozen=True)
class _Bad:
    """A result the host said (or the decoding found) is not what the hook returns."""

    reason: str


_RESULT_TYPES = frozenset({"XdpProgram", "Problem", "InterfaceRef"})


def _bad_programs(result: Any) -> str:
    if isinstance(result, _Bad):
        return result.reason
    if not isinstance(result, tuple):
        return f"expected a list, got {type(result).__name__}"
    for item in result:
        if type(item) is not XdpProgram:
            return f"item {one_line(repr(item), 80)} is not an XdpProgram"
        problems = program_problems(item)
        if problems:
            return f"{item.name!r}: {'; '.join(problems)}"
    return ""


def _good_problem(p: Any) -> bool:
    from .model import InterfaceRef

    return (type(p) is Problem and p.severity in ("error", "warning")
            and (p.plugin is None or isinstance(p.plugin, str))
            and isinstance(p.message, str) and isinstance(p.fix, str)
            and (p.interface is None or type(p.interface) is InterfaceRef))


def discover(paths: Paths, disable: frozenset[str] | set[str] = frozenset(),
             timeout: float = 10.0, entry_points: bool = True) -> Plugins:
    disable = set(disable) | {n for n in os.environ.get("XDPHOOKS_DISABLE", "").split(",") if n}
    plugins = Plugins(timeout=timeout)
    plugins.disabled = sorted(disable)

    files = _drop_ins(paths, plugins)
    if entry_points and not os.environ.get("XDPHOOKS_DISABLE_ENTRY_POINTS"):
        skip = set(files) | set(plugins.masked) | disable
        for name, value, dist in _entry_points():
            if name not in skip and plugins._load(name, {"op": "load", "name": name,
                                                         "entry": value, "dist": dist}):
                plugins.sources[name] = f"entry point {value} ({dist})"
    for name, path in sorted(files.items()):
        if name in disable:
            continue
        # Read what was checked, right before it runs: no symlink, root's, not writable
        # by others — checked on the opened file, so a file swapped in after _drop_ins()
        # (by a plugin imported before it, say) is refused, not run.
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
        request = {"op": "load", "name": name, "path": str(path),
                   "source": base64.b64encode(source).decode(),
                   "mask": f"{paths.admin_plugin_dir}/{name}.py"}
        if plugins._load(name, request):
            plugins.sources[name] = str(path)
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
            if d == paths.admin_plugin_dir and _is_mask(path):
                refused = _untrusted_mask(path, name)
                if refused:  # the plugin stays as it was: not masked, warned about
                    plugins.failures.append(refused)
                    continue
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


def _is_mask(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode) and os.readlink(path) == "/dev/null"
    except OSError:
        return False


def _untrusted_mask(path: Path, name: str) -> Failure | None:
    """A mask switches a plugin (a firewall, say) off: it must be as trusted as a plugin
    file — the link itself root's (lstat), its directories root's and not writable by
    others.  None if it is."""
    try:
        st = os.lstat(path)
        if st.st_uid != 0:
            raise XdphooksError(f"the link is owned by uid {st.st_uid}, not root",
                                fix=f"if the mask is wanted: chown -h root:root {path}")
        check_trusted_dirs(path.parent, "mask", plugin=name)
    except OSError as e:
        return Failure(name, f"mask {path} cannot be checked ({e.strerror}); the plugin is "
                       "not masked", f"remove {path}", breaks=False)
    except XdphooksError as e:
        return Failure(name, f"mask {path} refused, the plugin is not masked: "
                       f"{e.message.removeprefix('mask: ')}",
                       e.fix or f"remove {path}", breaks=False)
    return None


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
