"""``xdphooks metrics``: every interface's chain and program as Prometheus /
OpenMetrics text.

Read through ``status.collect`` (state, kernel, counters: one reading path for
every view) and the change log (``eventlog.read_history``). Three outputs:
stdout, ``--textfile DIR`` (atomic, for node_exporter's textfile collector; the
packages ship xdphooks-metrics.timer for it) and ``--listen ADDR:PORT`` (HTTP,
loopback only unless ``--allow-remote``: the endpoint has neither
authentication nor TLS and names interfaces, plugins and packages).

Metric names follow the Prometheus conventions: ``xdphooks_`` prefix, base
units (seconds), ``_total`` for counters, ``_info`` gauges of value 1 carrying
labels. Counters restart from 0 with each chain generation (a relink pins new
counters); ``rate()`` and ``increase()`` treat that as a counter reset.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .atomicfile import write_atomic
from .errors import UsageError
from .paths import Paths

TEXTFILE_NAME = "xdphooks.prom"
PROM_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
DEFAULT_PORT = 9465


@dataclass
class Family:
    """One metric family. ``name`` is the base name: a counter's samples get
    ``_total``, an info family's ``_info``."""

    name: str
    type: str  # counter | gauge | info
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: object) -> None:
        self.samples.append(({k: "" if v is None else str(v) for k, v in labels.items()},
                             float(value)))


def _iface_labels(i: dict) -> dict[str, str]:
    return {"interface": i["name"], "netns": i["netns"] or ""}


def _result(lr: dict) -> str:
    if lr.get("failed"):
        return "partial" if lr.get("applied") else "failed"
    return "ok"


def families(data: dict, history: list[dict]) -> list[Family]:
    """Pure: ``status.collect()`` output and change-log records -> metric families."""
    F = Family
    readable = F("xdphooks_counters_readable", "gauge",
                 "1 if kernel state and counters could be read (needs root)")
    readable.add(1 if data["root"] else 0)
    chain_info = F("xdphooks_chain", "info", "One per interface with a chain: backend mode, "
                   "XDP attach mode and chain fingerprint")
    gen = F("xdphooks_chain_generation", "gauge", "Generation number of the chain that runs")
    attached = F("xdphooks_chain_attached", "gauge",
                 "1 if the recorded chain is the program the kernel runs, 0 if not")
    nprogs = F("xdphooks_chain_programs", "gauge", "Programs in the chain")
    updated = F("xdphooks_chain_last_change_timestamp_seconds", "gauge",
                "When the chain was last attached or relinked (Unix time)")
    prog_info = F("xdphooks_program", "info", "One per program in a chain: slot, priority, "
                  "plugin, backend mode, link kind (spliced, called, freplace), kernel id")
    packets = F("xdphooks_program_packets", "counter",
                "Packets the program ran on (since the chain generation was attached)")
    verdicts = F("xdphooks_program_verdicts", "counter",
                 "Packets by the program's own XDP verdict, before the chain's policy")
    for i in data["interfaces"]:
        il = _iface_labels(i)
        chain_info.add(1, **il, mode=i["mode"], xdp_mode=i["xdp_mode"],
                       fingerprint=i["fingerprint"])
        gen.add(i["generation"], **il)
        if i["attached"] is not None:
            attached.add(1 if i["attached"] else 0, **il)
        nprogs.add(len(i["programs"]), **il)
        if i.get("updated"):
            updated.add(i["updated"], **il)
        for p in i["programs"]:
            pl = {**il, "program": p["name"]}
            prog_info.add(1, **pl, plugin=p["plugin"], slot=p["slot"], priority=p["priority"],
                          mode=i["mode"], link=p.get("link", ""), prog_id=p["prog_id"],
                          package=p.get("package") or "")
            if p["packets"] is not None:
                packets.add(p["packets"], **pl)
            for verdict, n in (p["verdicts"] or {}).items():
                verdicts.add(n, **pl, verdict=verdict)
    lr = data.get("last_run") or {}
    last_ts = F("xdphooks_last_reconcile_timestamp_seconds", "gauge",
                "When the last reconcile finished (Unix time)")
    last_ok = F("xdphooks_last_reconcile_success", "gauge",
                "1 if the last reconcile had no failed change, else 0")
    last_info = F("xdphooks_last_reconcile", "info",
                  "The last reconcile's trigger and result (ok, partial, failed)")
    last_changes = F("xdphooks_last_reconcile_changes", "gauge",
                     "Changes the last reconcile applied")
    last_failures = F("xdphooks_last_reconcile_failures", "gauge",
                      "Interfaces whose change failed in the last reconcile")
    last_problems = F("xdphooks_last_reconcile_problems", "gauge",
                      "Problems (refusals, warnings) the last reconcile reported")
    if lr:
        last_ts.add(lr.get("time", 0))
        last_ok.add(0 if lr.get("failed") else 1)
        last_info.add(1, trigger=lr.get("trigger", ""), result=_result(lr))
        last_changes.add(len(lr.get("applied") or []))
        last_failures.add(len(lr.get("failed") or {}))
        last_problems.add(len(lr.get("problems") or []))
    failures = F("xdphooks_failures", "counter",
                 "Failed changes in the retained change log, by kind")
    changes = F("xdphooks_changes", "counter",
                "Changes applied, in the retained change log, by action")
    fail_by: dict[str, int] = {}
    change_by: dict[str, int] = {}
    for r in history:
        if r.get("error"):
            kind = r.get("kind") or r.get("action") or "other"
            fail_by[kind] = fail_by.get(kind, 0) + 1
        else:
            action = r.get("action") or "other"
            change_by[action] = change_by.get(action, 0) + 1
    for kind, n in sorted(fail_by.items()):
        failures.add(n, kind=kind)
    for action, n in sorted(change_by.items()):
        changes.add(n, action=action)
    pending = F("xdphooks_pending", "gauge",
                "1 if an offline install is waiting to be applied at boot")
    pending.add(1 if data.get("pending") else 0)
    return [readable, chain_info, gen, attached, nprogs, updated, prog_info, packets, verdicts,
            last_ts, last_ok, last_info, last_changes, last_failures, last_problems, failures,
            changes, pending]


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: float) -> str:
    return str(int(v)) if v.is_integer() and abs(v) < 2 ** 63 else repr(v)


def render(fams: list[Family], openmetrics: bool = False) -> str:
    """Prometheus text format 0.0.4, or OpenMetrics 1.0 (``# EOF``, ``info`` type)."""
    out = []
    for f in fams:
        suffix = {"counter": "_total", "info": "_info"}.get(f.type, "")
        if openmetrics:
            head, typ = f.name, f.type
        else:  # 0.0.4 has no info type and names the family like its samples
            head, typ = f.name + suffix, "gauge" if f.type == "info" else f.type
        out.append(f"# HELP {head} {_escape_help(f.help)}")
        out.append(f"# TYPE {head} {typ}")
        for labels, value in f.samples:
            lab = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            out.append(f"{f.name}{suffix}{{{lab}}} {_value(value)}" if lab
                       else f"{f.name}{suffix} {_value(value)}")
    if openmetrics:
        out.append("# EOF")
    return "\n".join(out) + "\n"


def collect(paths: Paths) -> list[Family]:
    from . import status
    from .eventlog import read_history

    from . import drift

    data = status.collect(paths)
    history = read_history(paths.state_dir / "changes.log", 0)
    return families(data, history) + drift.families(paths, data)


class SharedCollection:
    """One collection at a time for a server: a scrape that arrives while one
    runs waits for the next and shares it (it started after the scrape
    arrived, so it is fresh) instead of queueing its own. Without this, scrapes
    slower than Prometheus' interval pile up until the listen backlog
    overflows and every scrape times out."""

    def __init__(self, paths: Paths):
        self._paths = paths
        self._lock = threading.Lock()
        self._started = -1.0
        self._fams: list[Family] = []

    def families(self) -> list[Family]:
        asked = time.monotonic()
        with self._lock:
            if self._started < asked:
                started = time.monotonic()
                self._fams = collect(self._paths)
                self._started = started  # not on failure: the next scrape tries again
            return self._fams


def write_textfile(directory: Path, text: str) -> Path:
    """Temp file in the same directory + rename: the collector never reads half a
    file. The temp name does not end in .prom, so the collector ignores it."""
    if not directory.is_dir():
        raise UsageError(f"textfile directory {directory} does not exist",
                         fix="create it, or point --textfile at node_exporter's "
                             "--collector.textfile.directory")
    dst = directory / TEXTFILE_NAME
    write_atomic(dst, text, durable=True)
    return dst


def parse_listen(spec: str, allow_remote: bool) -> tuple[str, int]:
    """ADDR:PORT, [V6]:PORT or :PORT (loopback). Refuses a non-loopback address
    unless allow_remote: the endpoint has no authentication or TLS."""
    host, sep, port_s = spec.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise UsageError(f"bad --listen {spec!r}", fix="write ADDR:PORT, e.g. "
                         f"127.0.0.1:{DEFAULT_PORT}")
    host = host.strip("[]") or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise UsageError(f"--listen needs a numeric address, not {host!r}",
                         fix=f"e.g. 127.0.0.1:{port_s} or [::1]:{port_s}") from None
    if not loopback and not allow_remote:
        raise UsageError(
            f"refusing to serve metrics on {host}: not a loopback address, and the endpoint "
            "has no authentication or TLS while it names interfaces, plugins and packages",
            fix="listen on 127.0.0.1 and put an authenticating TLS proxy in front, use "
                "--textfile with node_exporter, or pass --allow-remote if the network is "
                "trusted")
    return host, int(port_s)


def serve(paths: Paths, host: str, port: int, seconds: float | None = None) -> None:
    import http.server
    import socket

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "xdphooks-metrics"
        timeout = 30  # a client that connects and says nothing frees its thread

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?", 1)[0] != "/metrics":
                self._send(404, "text/plain; charset=utf-8", b"see /metrics\n")
                return
            om = "application/openmetrics-text" in self.headers.get("Accept", "")
            try:
                body = render(shared.families(), om).encode()
            except Exception as e:  # noqa: BLE001 - a scrape error, not a dead server
                self._send(500, "text/plain; charset=utf-8", f"{e}\n".encode())
                return
            self._send(200, OPENMETRICS_CONTENT_TYPE if om else PROM_CONTENT_TYPE, body)

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:
            pass  # a scrape every few seconds is not news

    shared = SharedCollection(paths)

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    with Server((host, port), Handler) as srv:
        srv.timeout = 0.5
        print(f"xdphooks: serving metrics on http://{host if ':' not in host else f'[{host}]'}"
              f":{srv.server_address[1]}/metrics", flush=True)
        end = time.monotonic() + seconds if seconds else None
        while end is None or time.monotonic() < end:
            srv.handle_request()


def main(args, paths: Paths) -> int:
    if args.listen:
        host, port = parse_listen(args.listen, args.allow_remote)
        serve(paths, host, port, args.seconds)
        return 0
    text = render(collect(paths), args.openmetrics)
    if args.textfile:
        write_textfile(Path(args.textfile), text)
        return 0
    print(text, end="")
    return 0
