"""``xdphooks watch``: give interfaces that appear later their chains.

udev covers the host namespace (packaging/systemd/90-xdphooks.rules); interfaces created
inside other network namespaces send no uevents there. This watcher opens one rtnetlink
socket per namespace (pyroute2), subscribes to link events, and reconciles only the
interface that appeared. New namespaces are picked up every ``rescan`` seconds.
"""

from __future__ import annotations

import select
import sys
import time

from .coordinator import Options, reconcile
from .errors import XdphooksError
from .kernel.netns import list_netns, netns
from .paths import Paths
from .signals import Interrupted

RTM_NEWLINK = 16


def _open(ns: str):
    from pyroute2 import IPRoute

    with netns(ns):  # the socket stays in the namespace it was created in
        ipr = IPRoute()
    ipr.bind()
    return ipr


def run(paths: Paths, rescan: float = 2.0, stop_after: float | None = None,
        out=sys.stdout) -> None:
    socks: dict[str, object] = {}
    known: set[tuple[str, int]] = set()
    t_end = time.monotonic() + stop_after if stop_after else None
    last_scan = 0.0
    while t_end is None or time.monotonic() < t_end:
        if time.monotonic() - last_scan >= rescan:
            last_scan = time.monotonic()
            for ns in [""] + list_netns():
                if ns not in socks:
                    try:
                        socks[ns] = _open(ns)
                    except Exception:  # noqa: BLE001 - namespace went away meanwhile
                        continue
            for ns in list(socks):
                if ns and ns not in list_netns():
                    socks.pop(ns).close()
        fds = {s.fileno(): ns for ns, s in socks.items()}
        ready, _, _ = select.select(list(fds), [], [], 0.5)
        for fd in ready:
            ns = fds[fd]
            try:
                msgs = socks[ns].get()
            except Exception:  # noqa: BLE001
                continue
            for msg in msgs:
                if msg.get("event") != "RTM_NEWLINK":
                    continue
                key = (ns, msg["index"])
                if key in known:
                    continue
                known.add(key)
                name = msg.get_attr("IFLA_IFNAME")
                iface = f"{ns}/{name}" if ns else name
                res = None
                try:
                    res = reconcile(paths, Options(trigger="hotplug", interfaces=(iface,)))
                    for c in res.applied:
                        print(f"hotplug: {c.action} {c.interface}", file=out, flush=True)
                except Interrupted as e:  # reconcile caught the signal meant for us: stop
                    print(f"hotplug: {iface}: {e.line()}", file=out, flush=True)
                    t_end = 0.0
                    break
                except XdphooksError as e:
                    print(f"hotplug: {iface}: {e.line()}", file=out, flush=True)
                if res is not None and res.interrupted:  # (systemctl stop during a change: it finished first)
                    print(f"hotplug: {res.interrupted}", file=out, flush=True)
                    t_end = 0.0
                    break
    for s in socks.values():
        s.close()


def main(args, paths: Paths) -> int:
    run(paths, stop_after=args.seconds)
    return 0
