"""``xdphooks`` command line. Imports only what each command needs (cold start matters:
package triggers run it on every transaction)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .errors import XdphooksError, fix_suffix
from .text import LINE_LIMIT, lines, one_line

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
EXIT_DRIFT = 4  # reconcile --check: the kernel does not run what the plugins want


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xdphooks",
        description="Chain independently packaged XDP programs on one interface.")
    p.add_argument("--root", help="prefix for every filesystem path (env XDPHOOKS_ROOT)")
    p.add_argument("--bpffs", help="pin root; a bpffs is mounted there if none is "
                   "(env XDPHOOKS_BPFFS, default /sys/fs/bpf)")
    p.add_argument("--disable", action="append", default=[], metavar="PLUGIN",
                   help="leave this plugin out (repeatable; env XDPHOOKS_DISABLE=a,b)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    r = sub.add_parser("reconcile", help="make the kernel match the installed plugins")
    r.add_argument("--trigger", default="manual",
                   help="who asked: rpm, dpkg-configure, dpkg-triggered, boot, udev, manual")
    r.add_argument("--takeover", action="store_true",
                   help="replace an XDP program that xdphooks did not attach")
    r.add_argument("--interface", action="append", default=[], metavar="IFACE",
                   help="only this interface (NETNS/IFNAME), e.g. from a hotplug event")
    r.add_argument("-q", "--quiet", action="store_true")
    r.add_argument("--check", action="store_true",
                   help="change nothing; exit 0 if the kernel runs what the plugins want, "
                   "4 if it drifted (printed), 1 if the check failed")

    pl = sub.add_parser("plan", help="show what reconcile would do; changes nothing")
    pl.add_argument("--json", action="store_true")

    s = sub.add_parser("status", help="chains, programs, counters (works without root)")
    s.add_argument("--json", action="store_true", help="machine-readable (schema: docs/status-json.md)")
    s.add_argument("--watch", nargs="?", const=2.0, type=float, metavar="SECONDS",
                   help="refresh every SECONDS (default 2) with packet rates")
    s.add_argument("--brief", action="store_true", help="one line per interface")
    s.add_argument("--profile", nargs="?", const=2.0, type=float, metavar="SECONDS",
                   help="ns per packet per program on live traffic, sampled for SECONDS "
                   "(default 2; root; tracers are attached only meanwhile)")

    t = sub.add_parser("teardown", help="detach chains and remove pins")
    g = t.add_mutually_exclusive_group(required=True)
    g.add_argument("interface", nargs="?", help="NETNS/IFNAME or IFNAME")
    g.add_argument("--all", action="store_true")

    doc = sub.add_parser("doctor", help="what this kernel and machine offer")
    doc.add_argument("--capabilities-json", action="store_true",
                     help="only the kernel's capabilities, probed, as JSON")

    tr = sub.add_parser("trace", help="run one packet through an interface's chain, "
                        "program by program")
    tr.add_argument("interface")
    tr.add_argument("program", nargs="?", help="with --live: the component to watch")
    src = tr.add_mutually_exclusive_group(required=True)
    src.add_argument("--udp", metavar="SRC:PORT->DST:PORT")
    src.add_argument("--tcp", metavar="SRC:PORT->DST:PORT")
    src.add_argument("--file", metavar="FILE", help="raw Ethernet frame")
    src.add_argument("--live", action="store_true",
                     help="show each real packet's verdict from PROGRAM while the chain runs")
    tr.add_argument("--count", type=int, default=100, metavar="N",
                    help="with --live: stop after N packets (default 100)")
    tr.add_argument("--seconds", type=float, default=30.0, metavar="S",
                    help="with --live: stop after S seconds (default 30)")
    tr.add_argument("--pcap", metavar="FILE",
                    help="with --live: also write the packets as pcapng to FILE ('-': stdout, "
                         "the text then goes to stderr); a comment per packet names slot, "
                         "program, entry/exit and verdict")
    tr.add_argument("--snaplen", type=int, default=256, metavar="N",
                    help="with --live: bytes of each packet captured (default 256)")
    tr.add_argument("--capture", default="exit", metavar="entry,exit",
                    help="with --live: the packet as PROGRAM got it (entry), as it left it "
                         "(exit), or both (default exit)")

    w = sub.add_parser("watch", help="attach chains to interfaces as they appear "
                       "(netlink, all namespaces)")
    w.add_argument("--seconds", type=float, help="stop after this long (default: forever)")

    ev = sub.add_parser("events", help="'log' events recorded by the chains, with the "
                        "packet (addresses, protocol, ports, length)")
    ev.add_argument("interface", nargs="?")
    evout = ev.add_mutually_exclusive_group()
    evout.add_argument("--json", action="store_true", help="one JSON object per line")
    evout.add_argument("--pcap", metavar="FILE", help="write the events' captured headers "
                       "as pcapng (- for stdout)")

    m = sub.add_parser("metrics", help="chains, programs and reconcile results as "
                       "Prometheus/OpenMetrics text")
    out = m.add_mutually_exclusive_group()
    out.add_argument("--textfile", metavar="DIR", help="write DIR/xdphooks.prom atomically "
                     "(node_exporter's textfile collector)")
    out.add_argument("--listen", metavar="ADDR:PORT",
                     help="serve /metrics over HTTP (loopback addresses only by default)")
    m.add_argument("--allow-remote", action="store_true",
                   help="with --listen: allow a non-loopback address (no auth, no TLS)")
    m.add_argument("--openmetrics", action="store_true",
                   help="OpenMetrics 1.0 instead of the Prometheus 0.0.4 text format")
    m.add_argument("--seconds", type=float, metavar="S",
                   help="with --listen: stop after S seconds (default: forever)")

    h = sub.add_parser("history", help="the chain changes xdphooks made: what, where, why, "
                       "and which package transaction")
    h.add_argument("-n", "--lines", type=int, default=30, metavar="N",
                   help="the newest N changes (0: all)")
    h.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code not in (0, None) else EXIT_OK
    from .paths import Paths

    paths = Paths.from_env(args.root, args.bpffs)
    # Every file and directory is created with the mode its code names (state dir 0755,
    # state.json and changes.log 0644, run dir 0700), whatever umask root's shell or the
    # package manager had: under umask 077 unprivileged status and history would break.
    os.umask(0o022)
    try:
        return COMMANDS[args.cmd](args, paths)
    except XdphooksError as e:
        from .signals import Interrupted

        print(f"xdphooks: {'' if isinstance(e, Interrupted) else 'error: '}"
              f"{one_line(e.line(), LINE_LIMIT)}",
              file=sys.stderr)
        if e.detail:
            print(lines(e.detail), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `xdphooks status | head`: the reader is gone, so are we
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as e:  # a system fault on one of our own files: a sentence, not a traceback
        from pathlib import Path

        from .fsfaults import fault

        line = (fault(Path(e.filename), e).line() if e.filename
                else f"{e.strerror or e}" + fix_suffix("check the filesystems xdphooks uses"))
        print(f"xdphooks: error: {line}", file=sys.stderr)
        return EXIT_ERROR


# --- reconcile ---------------------------------------------------------------


def _deferred(args) -> int | None:
    """Package-manager context: defer or only record instead of touching the kernel."""
    from . import pkg

    deferred = pkg.defer(args.trigger)
    if deferred is not None:
        print(deferred)
        return EXIT_OK
    offline = pkg.offline_root()
    if not offline and pkg.is_package_trigger(args.trigger) and _in_chroot():
        offline = "chroot install"
    if offline:
        from .paths import Paths

        paths = Paths.from_env(args.root, args.bpffs)
        _record_pending(paths, args.trigger, offline)
        print(f"xdphooks: {offline}: recorded; xdphooks.service applies it at boot")
        return EXIT_OK
    return None


def _in_chroot() -> bool:
    """Like Debian's ischroot: compare / with init's root by (device, inode)."""
    if not os.path.isdir("/proc/1"):
        return True  # no /proc: certainly not a running system we may touch
    try:
        a, b = os.stat("/"), os.stat("/proc/1/root")
    except PermissionError:
        return False  # /proc/1/root hidden from us (containers): not a chroot
    except OSError:
        return True
    return (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino)


def _record_pending(paths, trigger: str, why: str) -> None:
    from .security import ensure_private_dir

    ensure_private_dir(paths.state_dir, 0o755)
    (paths.state_dir / "pending").write_text(json.dumps({"time": time.time(),
                                                         "trigger": trigger, "why": why}))


def cmd_reconcile(args, paths) -> int:
    if args.check:
        from . import drift

        return drift.main(args, paths)
    deferred = _deferred(args)
    if deferred is not None:
        return deferred
    from .pluginhost import prestart

    prestart()  # the plugin host starts up on the other core while the coordinator imports
    from .coordinator import Options, reconcile

    opts = Options(trigger=args.trigger, disable=frozenset(args.disable),
                   takeover=args.takeover, interfaces=tuple(args.interface))
    result = reconcile(paths, opts)
    try:
        (paths.state_dir / "pending").unlink(missing_ok=True)
    except OSError:  # a read-only state dir (said by the run): the marker only re-runs us at boot
        pass
    for w in result.warnings:
        print(f"xdphooks: warning: {one_line(w, LINE_LIMIT)}", file=sys.stderr)
    for prob in result.plan.problems:
        print(f"xdphooks: {one_line(prob, LINE_LIMIT)}", file=sys.stderr)
    for change in result.applied:
        if not args.quiet:
            print(one_line(f"{change.action:8} {change.interface}  {change.reason}", LINE_LIMIT))
    for iface, msg in result.failed.items():
        msg = lines(msg)  # the last guard: each line escaped (a detail stays under it)
        named = iface in msg.split("\n", 1)[0]  # most messages name their interface already
        print(f"xdphooks: error: {msg}" if named else
              f"xdphooks: error: {one_line(iface)}: {msg}",
              file=sys.stderr)
    for msg in result.errors:
        print(f"xdphooks: error: {msg}", file=sys.stderr)
    if result.interrupted:
        print(f"xdphooks: {result.interrupted}", file=sys.stderr)
    elif result.skipped and result.applied:  # a fault stopped the run after a change
        print("xdphooks: not attempted after that: "
              + ", ".join(f"{c.action} {c.interface}" for c in result.skipped), file=sys.stderr)
    if not (result.applied or result.failed or result.errors or result.interrupted
            or args.quiet):
        print("nothing to do" if not result.plan.errors else "nothing changed")
    return result.exit_code


def cmd_plan(args, paths) -> int:
    from .coordinator import Options, gather, require_root

    require_root("plan", reads=True)

    sess = gather(paths, Options(disable=frozenset(args.disable)))
    plan = sess.plan
    links = _predicted_links(plan)
    if args.json:
        print(json.dumps({
            "changes": [{"interface": str(c.interface), "action": c.action, "reason": c.reason,
                         "running": list(c.running_names),
                         "desired": list(c.desired.names) if c.desired else [],
                         "mode": c.desired.mode if c.desired else None,
                         "links": links.get(str(c.interface))}
                        for c in plan.changes],
            "problems": [{"severity": p.severity, "plugin": p.plugin, "message": p.message,
                          "fix": p.fix} for p in plan.problems]}, indent=2))
    else:
        for p in plan.problems:
            print(p)
        for c in plan.changes:
            if c.action == "keep" and not c.refused:
                continue
            chain = " → ".join(f"{e.name}({e.priority})" for e in c.desired.entries) \
                if c.desired else "∅"
            print(f"{c.action:8} {c.interface}: {chain}  [{c.reason}]")
            for e, ln in zip(c.desired.entries if c.desired else (), links.get(str(c.interface), [])):
                if ln["reason"]:
                    print(f"         {e.name}: called, not spliced: {ln['reason']}")
        if not plan.pending:
            print("nothing to do" if not plan.errors else "nothing would change")
    return EXIT_ERROR if plan.errors and not plan.pending else EXIT_OK


def _predicted_links(plan) -> dict[str, list[dict[str, str]]]:
    """interface -> per program {"link", "reason"} for the static chains the plan builds."""
    import tempfile
    from pathlib import Path

    from . import backends

    out = {}
    with tempfile.TemporaryDirectory(prefix="xdphooks-plan-") as tmp:
        for c in plan.changes:
            if c.desired is None:
                continue
            links = backends.get(c.desired.mode).predict_links(c.desired, Path(tmp))
            if links is not None:  # a backend with something to say per slot (static)
                out[str(c.interface)] = links
    return out


def cmd_teardown(args, paths) -> int:
    from .coordinator import teardown

    done = teardown(paths, None if args.all else args.interface)
    for iface in done:
        print(f"detached {iface}")
    return EXIT_OK


def cmd_status(args, paths) -> int:
    from . import status

    return status.main(args, paths)


def cmd_doctor(args, paths) -> int:
    from . import doctor

    return doctor.main(args, paths)


def cmd_trace(args, paths) -> int:
    if args.program and not args.live:
        raise XdphooksError(f"a program name ({args.program}) goes with --live only",
                            fix="xdphooks trace --live IFACE PROGRAM, or trace IFACE --udp ...")
    if args.live:
        from . import livetrace

        return livetrace.main(args, paths)
    from . import trace

    return trace.main(args, paths)


def cmd_events(args, paths) -> int:
    from . import events

    return events.main(args, paths)


def cmd_history(args, paths) -> int:
    from .eventlog import read_history

    warnings: list[str] = []
    records = read_history(paths.state_dir / "changes.log", args.lines, warnings)
    for w in warnings:
        print(f"xdphooks: warning: {w}", file=sys.stderr)
    for r in records:
        if args.json:
            print(json.dumps(r))
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("time", 0)))
        by = r.get("trigger", "?") + (f", {r['packages']}" if r.get("packages") else "")
        print(f"{when}  {'ERROR ' if r.get('error') else ''}"
              f"{one_line(r.get('message', ''), LINE_LIMIT)}  [{one_line(by)}]")
    if not records and not args.json:
        print("no changes recorded yet")
    return EXIT_OK


def cmd_metrics(args, paths) -> int:
    from . import metrics

    return metrics.main(args, paths)


def cmd_watch(args, paths) -> int:
    from . import watch

    return watch.main(args, paths)


COMMANDS = {
    "reconcile": cmd_reconcile, "plan": cmd_plan, "status": cmd_status,
    "teardown": cmd_teardown, "doctor": cmd_doctor, "trace": cmd_trace, "events": cmd_events,
    "watch": cmd_watch, "history": cmd_history, "metrics": cmd_metrics,
}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
