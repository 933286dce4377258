"""``xdphooks events``: the events the chains' ``log`` decisions recorded, with the packet.

Run as root, it first moves each chain's ring into ``events.log``
(:func:`xdphooks.counters.drain_events`); then it shows the log's last 1000 records,
each with what the packet's first bytes say (:mod:`xdphooks.packet`): the flow a
"firewall returned TX" or an aborted packet belonged to. ``--json`` prints one object
per line, ``--pcap FILE`` writes the captured headers as pcapng (:mod:`xdphooks.pcap`).
Read-only otherwise; imports nothing from the coordinator.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, BinaryIO

from . import abi
from . import state as state_mod
from .errors import UsageError
from .packet import decode, summary
from .paths import Paths
from .security import is_root

#: an events.log record (counters.drain_events). Keys added after the first version
#: (slot, time_ns, packet_len: decimal strings; packet: hex) hold strings, because
#: eventlog.parse_records, in this version and older ones, skips a record whose
#: unknown key is not a string: a downgraded xdphooks still reads these records.
EVENT_FIELDS = {"ts_ns": (int,), "generation": (int,)}
EVENT_REQUIRED = ("ts_ns", "interface", "program", "verdict")
SHOWN = 1000  # the log's last records shown


def packet_of(ev: dict[str, Any]) -> tuple[bytes, int] | None:
    """(captured bytes, packet length) of a record, None if it has none (written by a
    version 2 chain) or they are not readable."""
    try:
        data = bytes.fromhex(ev["packet"])
        length = int(ev.get("packet_len", len(data)))
    except (KeyError, ValueError, TypeError):
        return None
    return data[:abi.EVENT_SNAPLEN], max(length, len(data))


def _int(ev: dict[str, Any], key: str) -> int | None:
    try:
        return int(ev[key])
    except (KeyError, ValueError, TypeError):
        return None


def as_json(ev: dict[str, Any]) -> dict[str, Any]:
    """The record as ``events --json`` prints it: the packet decoded."""
    pkt = packet_of(ev)
    return {"ts_ns": ev["ts_ns"], "time_ns": _int(ev, "time_ns"),
            "interface": ev["interface"], "program": ev["program"],
            "slot": _int(ev, "slot"), "verdict": ev["verdict"],
            "generation": ev.get("generation"),
            "packet": decode(*pkt) if pkt else None,
            "packet_bytes": pkt[0].hex() if pkt else None}


def line(ev: dict[str, Any]) -> str:
    text = (f"{ev['ts_ns'] / 1e9:14.6f} {ev['interface']}: {ev['program']} returned "
            f"{ev['verdict']} (logged, chain continued)")
    pkt = packet_of(ev)
    return f"{text}: {summary(decode(*pkt))}" if pkt else text


def write_pcap(out: BinaryIO, events: list[dict[str, Any]], name: str) -> int:
    """The captured headers of ``events`` as pcapng; returns how many packets."""
    from .pcap import PcapngWriter, comment

    w = PcapngWriter(out, abi.EVENT_SNAPLEN, name, tool="xdphooks events")
    n = 0
    for ev in events:
        pkt = packet_of(ev)
        if pkt is None:
            continue
        slot = _int(ev, "slot")
        when = _int(ev, "time_ns") or ev["ts_ns"]  # no wall clock recorded: since boot
        w.packet(when, pkt[0], pkt[1], comment(-1 if slot is None else slot, ev["program"],
                                               "exit", ev["verdict"], "log"))
        n += 1
    return n


def main(args: argparse.Namespace, paths: Paths) -> int:
    from .eventlog import log_file_problem, parse_records, read_lines, skipped_warning

    st, warning = state_mod.load(paths.state_file, paths.pin_root)
    if warning:
        print(f"xdphooks: warning: {warning}", file=sys.stderr)
    if is_root():
        from .counters import drain_events

        for rec in st.interfaces.values():
            try:
                drain_events(paths, rec)
            except OSError:  # events.log not writable (said below if not a file): show it
                pass
    path = paths.state_dir / "events.log"
    if problem := log_file_problem(path, "events log"):
        print(f"xdphooks: warning: {problem}", file=sys.stderr)
    events, bad = parse_records(read_lines(path, "events log")[-SHOWN:], EVENT_FIELDS,
                                EVENT_REQUIRED)
    if bad:
        print(f"xdphooks: warning: {skipped_warning(path, bad, 'events log')}", file=sys.stderr)
    if args.interface:
        events = [ev for ev in events if args.interface in
                  (ev["interface"], ev["interface"].rpartition("/")[2])]
    if getattr(args, "pcap", None):
        _pcap_main(args.pcap, events, args.interface or "")
        return 0
    if getattr(args, "json", False):
        for ev in events:
            print(json.dumps(as_json(ev)))
        return 0
    for ev in events:
        print(line(ev))
    if not events:
        print("no events")
    return 0


def _pcap_main(target: str, events: list[dict[str, Any]], name: str) -> None:
    if target == "-":
        if sys.stdout.isatty():
            raise UsageError("pcapng is binary; not written to a terminal",
                             fix="xdphooks events --pcap - | tcpdump -r -, or --pcap FILE")
        n = write_pcap(sys.stdout.buffer, events, name)
        sys.stdout.buffer.flush()
    else:
        try:
            with open(target, "wb") as f:
                n = write_pcap(f, events, name)
        except OSError as e:
            raise UsageError(f"cannot write {target}: {e.strerror}",
                             fix="name a writable file, or - for stdout") from None
    print(f"xdphooks: {n} packet(s) of {len(events)} event(s) written to "
          f"{'stdout' if target == '-' else target}", file=sys.stderr)


__all__ = ["main", "line", "as_json", "packet_of", "write_pcap", "EVENT_FIELDS"]
