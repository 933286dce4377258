"""The plugin host: a child process that runs all plugin code, killed when it misbehaves.

Plugin code (imports of drop-ins and entry points, every hook call) never runs
in the coordinator's process.  The coordinator starts a host, sends it one
request at a time over a unix socketpair (JSON frames, never pickle: unpickling
would run code in the coordinator) and waits with ``poll()`` until the request's
deadline.  Whatever the plugin does in the child — a C loop holding the GIL,
``os._exit``, ``fork``, closing every fd, ``setns``/``umask``/``chdir``,
flooding its output, a segfault — the coordinator sees a reply, a timeout or a
dead process, and kills the host's whole process group (the host runs in a
session of its own, so a plugin's forked grandchildren die with it).

The host holds no lock fd, no kernel object it was not handed and none of the
coordinator's state: the first host is forked — by the CLI before the coordinator's
imports (:func:`prestart`), so it starts up on the other core meanwhile — and
closes every fd except its channel before any plugin code runs; a host started
again after a failure is a fresh interpreter (``-I``, the same ``sys.path``, only its channel
passed), since by then the coordinator may hold memory-mapped BPF maps a fork
would share.  Its stdout and stderr go to a pipe the coordinator drains while it
waits, keeping the last :data:`OUTPUT_KEEP` bytes for a failure message; they
never reach the coordinator's terminal.  Replies are bounded by
:data:`MAX_REPLY` and rebuilt and validated by the caller (``plugins.py``).

File descriptors a hook needs (``xdphooks_prog_arrays``) are passed with
``SCM_RIGHTS`` and closed in the child after the call.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any, Mapping

#: the most a plugin host may send in one reply (a chain's declarations are kilobytes)
MAX_REPLY = 16 * 1024 * 1024
#: how long a host may take to start (a fresh interpreter, on a busy machine)
STARTUP_TIMEOUT = 30.0
#: how much of the host's stdout/stderr is kept, for the line naming a dead plugin
OUTPUT_KEEP = 4096
_HEADER = struct.Struct("!I")
_MAX_FDS = 253  # SCM_MAX_FD
_CHUNK = 1 << 16
_ACKED = ("load", "call")  # the requests that run plugin code
_BROKEN = 70  # the host's exit status when its channel failed under it (EX_SOFTWARE)


class HostDied(Exception):
    """The host was killed or died during a request; ``str()`` is the reason, one clause."""

    #: the host never said it took the request: no plugin code of this request ran, the
    #: host was stalled before (by a thread some plugin left running, say)
    stalled = False


# --- data across the channel ------------------------------------------------------------
#
# Plain JSON plus tagged objects for the model's dataclasses.  Only the types listed
# are rebuilt; anything else is refused, so a reply is data and nothing but data.


def _model_types() -> dict[str, type]:
    from . import model

    return {t.__name__: t for t in (model.InterfaceRef, model.Chain, model.ChainEntry,
                                    model.XdpProgram, model.Problem)}


def encode(v: Any) -> Any:
    from .model import VerdictPolicy

    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, bytes):
        return {"__bytes": v.hex()}
    if isinstance(v, enum.Enum):
        return encode(v.value)
    if isinstance(v, VerdictPolicy):
        return {"__policy": v.as_dict()}
    if dataclasses.is_dataclass(v) and type(v).__name__ in _model_types() \
            and type(v) is _model_types()[type(v).__name__]:
        return {"__t": type(v).__name__,
                "f": {f.name: encode(getattr(v, f.name)) for f in dataclasses.fields(v)}}
    if isinstance(v, Mapping):
        return {"__map": [[encode(k), encode(x)] for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        return [encode(x) for x in v]
    raise TypeError(f"a {type(v).__name__} is not plain data")


def decode(v: Any, allowed: frozenset[str]) -> Any:
    """Rebuild what :func:`encode` made; dataclasses only of the ``allowed`` names (their
    constructors validate: ``XdpProgram`` runs ``program_problems``)."""
    from .model import Link, VerdictPolicy

    if isinstance(v, list):
        return tuple(decode(x, allowed) for x in v)
    if not isinstance(v, dict):
        return v
    if set(v) == {"__bytes"}:
        return bytes.fromhex(v["__bytes"])
    if set(v) == {"__policy"}:
        return VerdictPolicy.from_mapping(v["__policy"])
    if set(v) == {"__map"}:
        return {decode(k, allowed): decode(x, allowed) for k, x in v["__map"]}
    if set(v) == {"__t", "f"} and v["__t"] in allowed and isinstance(v["f"], dict):
        cls = _model_types()[v["__t"]]
        fields = {k: decode(x, allowed) for k, x in v["f"].items()}
        if fields.get("link") is not None and cls.__name__ in ("ChainEntry", "XdpProgram"):
            fields["link"] = Link(fields["link"])
        return cls(**fields)
    raise ValueError(f"unexpected object {sorted(v)[:3]}")


# --- the coordinator's side ---------------------------------------------------------------


class Host:
    """One running plugin host; :meth:`request` sends a request and waits for the reply."""

    def __init__(self, fresh: bool, greet: bool = True) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if child.fileno() < 3:  # stdio closed (a package hook): 0-2 become the host's stdio
            low = child.detach()
            child = socket.socket(fileno=fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, 3))
            os.close(low)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        self.sock = parent
        self.out_r = out_r
        self.output = bytearray()
        self.proc: subprocess.Popen | None = None
        self.pid = 0
        self.pidfd = -1
        self.dead: str = ""
        self.sent = 0  # requests numbered: a reply must carry its request's number
        #: plugins with a thread of theirs still running, as the last reply said
        self.threaded: frozenset[str] = frozenset()
        try:
            if fresh:
                self._spawn(child, out_w)
            else:
                self._fork(child, out_w)
            self.pidfd = os.pidfd_open(self.pid)
        finally:
            child.close()
            os.close(out_w)
        os.set_blocking(out_r, False)
        parent.setblocking(False)
        self.greeted = False
        if greet:
            self.greet()

    def greet(self) -> None:
        """Wait until the host is up and answering, before any plugin's time starts: a
        fresh interpreter on a loaded machine may take a while, and that is no plugin's
        fault. :class:`HostDied` (the host killed) if it does not answer."""
        if not self.greeted:
            self.request({"op": "order", "hook": "xdphooks_programs"}, STARTUP_TIMEOUT)
            self.greeted = True

    @classmethod
    def failed(cls, reason: str) -> "Host":
        """A host that did not start: every request raises :class:`HostDied`."""
        host = cls.__new__(cls)
        host.dead, host.pid, host.proc, host.threaded = reason, 0, None, frozenset()
        host.greeted = True
        host.output, host.out_r, host.pidfd, host.sock = bytearray(), -1, -1, None
        return host

    def _fork(self, child: socket.socket, out_w: int) -> None:
        keep = child.fileno()
        ppid = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                os.setsid()  # its own process group: killed as a whole, grandchildren too
                devnull = os.open("/dev/null", os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(out_w, 1)
                os.dup2(out_w, 2)
                # every inherited fd goes before any plugin code runs: the lock, BPF
                # objects, the state and log files stay the coordinator's alone
                os.closerange(3, keep)
                os.closerange(keep + 1, 1 << 20)
                serve(keep, ppid)
            finally:
                os._exit(_BROKEN)
        self.pid = pid

    def _spawn(self, child: socket.socket, out_w: int) -> None:
        boot = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
                "from xdphooks.pluginhost import serve; serve(int(sys.argv[2]), int(sys.argv[3]))")
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", boot, json.dumps(sys.path), str(child.fileno()),
             str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, pass_fds=(child.fileno(),),
            close_fds=True, start_new_session=True)
        self.pid = self.proc.pid

    # -- requests

    def request(self, msg: dict, timeout: float, fds: list[int] = ()) -> dict:
        """Send ``msg`` (with ``fds``), return the reply; :class:`HostDied` if the host
        does not answer within ``timeout`` s or dies (it is then killed and reaped)."""
        if self.dead:
            raise HostDied(self.dead)
        self._drain()
        self.output.clear()  # what is kept is this request's: the plugin's own output
        deadline = time.monotonic() + timeout
        self.sent += 1
        data = json.dumps(dict(msg, n=self.sent)).encode()
        frame = _HEADER.pack(len(data)) + data
        # requests that run plugin code are acknowledged first, before any of it runs
        acked = msg.get("op") not in _ACKED
        try:
            self._send(frame, list(fds), deadline, timeout)
            if not acked:
                ack = self._receive(deadline, timeout)
                if not isinstance(ack, dict) or ack.get("ack") != self.sent:
                    raise HostDied("sent a reply that is not the answer to its request (killed)")
                acked = True
            reply = self._receive(deadline, timeout)
            if not isinstance(reply, dict) or reply.get("n") != self.sent:
                raise HostDied("sent a reply that is not the answer to its request (killed)")
        except HostDied as e:
            e.stalled = not acked
            self.kill(str(e))
            raise
        threads = reply.get("threads")
        self.threaded = frozenset(t for t in threads if isinstance(t, str)) \
            if isinstance(threads, list) else frozenset()
        return reply

    def _wait(self, events: int, deadline: float, timeout: float) -> None:
        """Poll the channel for ``events``, draining the output pipe, until the deadline."""
        p = select.poll()
        p.register(self.sock.fileno(), events)
        p.register(self.out_r, select.POLLIN)
        p.register(self.pidfd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HostDied(f"did not return within {timeout:g} s (killed)")
            ready = dict(p.poll(min(left * 1000, 2**31 - 1)))
            if self.out_r in ready:
                self._drain()
            if self.sock.fileno() in ready:
                return
            if self.pidfd in ready:
                raise HostDied(self._death())

    def _send(self, frame: bytes, fds: list[int], deadline: float, timeout: float) -> None:
        view = memoryview(frame)
        while view:
            self._wait(select.POLLOUT, deadline, timeout)
            try:
                if fds:
                    n = socket.send_fds(self.sock, [view[:_CHUNK]], fds)
                    fds = []
                else:
                    n = self.sock.send(view[:_CHUNK])
            except BlockingIOError:
                continue
            except OSError:
                raise HostDied(self._death()) from None
            view = view[n:]

    def _receive(self, deadline: float, timeout: float) -> Any:
        buf = bytearray()
        need = _HEADER.size
        while len(buf) < need:
            self._wait(select.POLLIN, deadline, timeout)
            try:
                chunk = self.sock.recv(min(_CHUNK, need - len(buf)))
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                raise HostDied(self._death(closed=True))
            buf += chunk
            if need == _HEADER.size and len(buf) == need:
                (size,) = _HEADER.unpack(buf)
                if size > MAX_REPLY:
                    raise HostDied(f"sent a reply of {size} bytes, more than the "
                                   f"{MAX_REPLY >> 20} MiB allowed (killed)")
                need += size
        try:
            return json.loads(bytes(buf[_HEADER.size:]))
        except (ValueError, RecursionError):
            raise HostDied("sent a reply that is not JSON (killed)") from None

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.out_r, _CHUNK)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self.output += chunk
            del self.output[:-OUTPUT_KEEP]

    def last_output(self) -> str:
        self._drain()
        lines = [ln.strip() for ln in bytes(self.output).decode("utf-8", "replace").splitlines()
                 if ln.strip()]
        fatal = [ln for ln in lines if ln.startswith("Fatal Python error")]  # faulthandler's
        return (fatal or lines or [""])[-1][:200]

    def _death(self, closed: bool = False) -> str:
        """Why the host stopped answering: its exit status, once it is reaped."""
        status = self._reap(wait=not closed)
        if status is None:  # still running, channel closed (a plugin closed its fds?)
            return "closed the plugin host's channel (killed)"
        if status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            return f"killed the plugin host ({name})"
        if status == _BROKEN:
            return "broke the plugin host's channel (closed its file descriptors?)"
        return f"ended the plugin host (exit status {status}; os._exit()?)"

    def _reap(self, wait: bool) -> int | None:
        """The host's exit code (negative: signal), or None if it still runs."""
        if self.pid == 0:
            return None
        if not wait:
            # a closed channel with the process alive: give an exiting host a moment
            r, _, _ = select.select([self.pidfd], [], [], 0.2)
            if not r:
                return None
        try:
            if self.proc is not None:
                code = self.proc.wait()
            else:
                _, st = os.waitpid(self.pid, 0)
                code = os.waitstatus_to_exitcode(st)
        except ChildProcessError:
            code = 0
        self.pid = 0
        return code

    def kill(self, why: str = "closed") -> None:
        """Kill the host's process group (plugin grandchildren too) and reap it."""
        if not self.dead:
            self.dead = why
        pid = self.pid  # 0 once reaped: never signal a pid that may be reused
        for fn in (os.killpg, os.kill):
            try:
                fn(pid, signal.SIGKILL) if pid else None
            except (ProcessLookupError, PermissionError):
                pass
        if self.pid:
            self._reap(wait=True)
        self._drain()
        for close in (lambda: self.sock and self.sock.close(), lambda: os.close(self.out_r),
                      lambda: os.close(self.pidfd) if self.pidfd >= 0 else None):
            try:
                close()
            except OSError:
                pass
        self.out_r = self.pidfd = -1


# --- the first host, started early ---------------------------------------------------------
#
# A run's first host is forked by the CLI before it imports the coordinator (prestart):
# the child imports pluggy and the hook specifications (~15 ms) on the other core while
# the coordinator imports its own modules, and it is forked from a process that holds
# even less (no lock, no state file, no BPF object yet).  Its channel is the same, its
# fds are closed the same way, and the first request waits for its greeting as for any
# host's.  A host nobody takes ends with the CLI (its channel closes; PR_SET_PDEATHSIG).

_early: Host | None = None


def prestart() -> None:
    """Fork the run's first plugin host now; :func:`take_prestarted` hands it over."""
    global _early
    if _early is not None or os.geteuid() != 0:  # reconcile runs as root only
        return
    try:
        _early = Host(fresh=False, greet=False)
    except OSError:  # no fork now (EAGAIN): the run forks its host when it needs one
        _early = None


def take_prestarted() -> Host | None:
    """The host :func:`prestart` forked, answering, or None (none, or it died: the caller
    starts one the usual way)."""
    global _early
    host, _early = _early, None
    if host is None:
        return None
    try:
        host.greet()
    except HostDied:  # killed and reaped by request(): start another
        return None
    return host


# --- the host's side ----------------------------------------------------------------------


def _line(e: BaseException) -> str:
    """``raised TYPE: message`` — the message is plugin code too (``__str__``)."""
    try:
        text = str(e)
    except BaseException:  # noqa: BLE001
        text = "(its message cannot be shown)"
    return f"raised {type(e).__name__}: {text}"


def _thread_ids() -> set[int]:
    import threading

    return {t.ident for t in threading.enumerate()}


def bad_programs(result: Any) -> str:
    from .model import XdpProgram, program_problems

    if not isinstance(result, (list, tuple)):
        return f"expected a list, got {type(result).__name__}"
    for item in result:
        if not isinstance(item, XdpProgram):
            return f"item {item!r} is not an XdpProgram"
        problems = program_problems(item)
        if problems:
            return f"{item.name!r}: {'; '.join(problems)}"
    return ""


class _Server:
    def __init__(self, fd: int) -> None:
        import pluggy

        from . import hookspecs

        self.sock = socket.socket(fileno=fd)
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.threads: dict[str, set[int]] = {}
        self.pm.add_hookspecs(hookspecs)

    def loop(self) -> None:
        me = os.getpid()
        while True:
            msg, fds = self._read()
            if msg.get("op") in _ACKED:
                self._send({"ack": msg.get("n")})
            before = _thread_ids()
            try:
                reply = self.handle(msg, fds)
            except Exception as e:  # noqa: BLE001 - a request the host cannot serve
                reply = {"error": f"could not be called: {_line(e)}"}
            finally:
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            if os.getpid() != me:  # a plugin forked and its child returned here: not ours
                os._exit(0)
            # threads a plugin's code started are its: a stall between calls is theirs
            plugin = msg.get("name") or msg.get("plugin")
            if plugin and (new := _thread_ids() - before):
                self.threads.setdefault(plugin, set()).update(new)
            alive = _thread_ids()
            reply["threads"] = sorted(p for p, ids in self.threads.items() if ids & alive)
            reply["n"] = msg.get("n")
            try:
                self._send(reply)
            except (TypeError, ValueError) as e:
                self._send({"bad": f"its result is not plain data ({e})", "n": msg.get("n")})

    def _send(self, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.sock.sendall(_HEADER.pack(len(data)) + data)

    def _read(self) -> tuple[dict, list[int]]:
        buf, fds, need = bytearray(), [], _HEADER.size
        while len(buf) < need:
            data, got, _, _ = socket.recv_fds(self.sock, min(_CHUNK, need - len(buf)), _MAX_FDS)
            if not data:
                os._exit(0)  # the coordinator is gone
            buf += data
            fds += got
            if need == _HEADER.size and len(buf) == need:
                need += _HEADER.unpack(buf)[0]
        return json.loads(bytes(buf[_HEADER.size:])), fds

    def handle(self, msg: dict, fds: list[int]) -> dict:
        op = msg.get("op")
        if op == "load":
            return self.load(msg)
        if op == "order":
            hc = getattr(self.pm.hook, msg["hook"])
            return {"ok": [impl.plugin_name for impl in reversed(hc.get_hookimpls())]}
        if op == "call":
            return self.call(msg, fds)
        return {"error": f"unknown request {op!r}"}

    def load(self, msg: dict) -> dict:
        name = msg["name"]
        try:
            if "source" in msg:
                obj = _import_file(name, msg["path"], base64.b64decode(msg["source"]))
            else:
                obj = _load_entry_point(msg["entry"])
        except BaseException as e:  # noqa: BLE001 - plugin code may raise anything
            return {"error": _line(e), "stage": "import"}
        try:
            self.pm.register(obj, name=name)
            self.pm.check_pending()
        except Exception as e:  # pluggy's PluginValidationError and friends
            self._unregister(name)
            return {"error": f"invalid hook implementation: {e}", "stage": "register"}
        impls = [(caller.name, impl) for caller in self.pm.get_hookcallers(obj) or ()
                 for impl in caller.get_hookimpls() if impl.plugin is obj]
        wrappers = sorted(hook for hook, impl in impls
                          if impl.hookwrapper or getattr(impl, "wrapper", False))
        if wrappers:
            self._unregister(name)
            return {"error": ", ".join(wrappers), "stage": "wrapper"}
        return {"ok": sorted({hook for hook, _ in impls})}

    def _unregister(self, name: str) -> None:
        try:
            self.pm.unregister(name=name)
        except Exception:  # noqa: BLE001 - not registered (or half): nothing to undo
            pass

    def call(self, msg: dict, fds: list[int]) -> dict:
        hook, plugin = msg["hook"], msg["plugin"]
        impls = [i for i in getattr(self.pm.hook, hook).get_hookimpls()
                 if i.plugin_name == plugin]
        if not impls:
            return {"ok": None}
        kwargs = decode(msg["args"], frozenset({"InterfaceRef", "Chain", "ChainEntry"}))
        for key, slots in msg.get("fds", {}).items():  # {name: index into fds}
            kwargs[key] = {n: fds[i] for n, i in slots.items()}
        impl = impls[0]
        try:
            result = impl.function(*(kwargs[a] for a in impl.argnames))
        except BaseException as e:  # noqa: BLE001 - plugin code may raise anything
            return {"error": _line(e)}
        return self.check(hook, result)

    def check(self, hook: str, result: Any) -> dict:
        from .model import Problem

        try:
            if hook == "xdphooks_programs":
                bad = bad_programs(result)
                return {"bad": bad} if bad else {"ok": encode(list(result))}
            if hook == "xdphooks_validate_chain":
                if result is None:
                    return {"ok": None}
                if not isinstance(result, (list, tuple)) or not all(
                        type(p) is Problem for p in result):
                    return {"bad": "not a list of problems"}
                return {"ok": encode(list(result))}
            if hook == "xdphooks_select_mode":
                if result is None or isinstance(result, str):
                    return {"ok": result}
                return {"bad": f"a {type(result).__name__}"}
        except BaseException as e:  # noqa: BLE001 - __repr__ of plugin objects, say
            return {"bad": f"its result cannot be read: {_line(e)}"}
        return {"ok": None}  # notifications: return values are ignored


def _import_file(name: str, path: str, source: bytes):
    """Run ``source`` (the checked bytes of ``path``) as module ``xdphooks_plugin_NAME``."""
    import importlib.util

    modname = f"xdphooks_plugin_{name.replace('-', '_')}"
    spec = importlib.util.spec_from_loader(modname, loader=None, origin=path)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = path
    sys.modules[modname] = module
    try:
        exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return module


def _load_entry_point(value: str):
    import importlib

    module, _, attr = value.partition(":")
    obj = importlib.import_module(module.strip())
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


def serve(fd: int, coordinator: int) -> None:
    """The host's main: answer requests on ``fd`` until the coordinator goes away."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    try:  # die with the coordinator, whatever kills it
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != coordinator:
        os._exit(0)
    import faulthandler

    faulthandler.enable()  # a segfault says so in the kept output
    try:
        _Server(fd).loop()
    except BaseException:  # noqa: BLE001 - the channel broke under it (a plugin closed it)
        os._exit(_BROKEN)
    os._exit(0)
