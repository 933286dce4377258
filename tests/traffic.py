"""Bounded UDP traffic for the reliability suite, run inside a namespace with
``ip netns exec``. Bounded in count and rate, to one address on the test's
own veth; it never picks a destination by itself.

    traffic.py send DST PORTS RATE MAX STOPFILE   -> {"sent": {port: n}}
    traffic.py recv PORTS READYFILE STOPFILE      -> {"received": {port: n}}

``send`` round-robins over PORTS at RATE packets/s until STOPFILE exists or
MAX packets are sent. ``recv`` counts datagrams per port until STOPFILE exists
and the sockets have been quiet for a second.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys
import time


def send(dst: str, ports: list[int], rate: float, max_n: int, stop: str) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = {p: 0 for p in ports}
    interval, t0, n = 1.0 / rate, time.monotonic(), 0
    while n < max_n and not os.path.exists(stop):
        port = ports[n % len(ports)]
        payload = n.to_bytes(8, "big")  # a sequence number, for debugging losses
        try:
            s.sendto(payload, (dst, port))
            sent[port] += 1
        except OSError:  # ENOBUFS and friends: not sent, not counted
            pass
        n += 1
        delay = t0 + n * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return {"sent": sent}


def recv(ports: list[int], ready: str, stop: str) -> dict:
    sel = selectors.DefaultSelector()
    got = {}
    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(("0.0.0.0", p))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, p)
        got[p] = 0
    open(ready, "w").close()
    quiet_since = time.monotonic()
    while True:
        events = sel.select(timeout=0.2)
        for key, _ in events:
            while True:
                try:
                    key.fileobj.recv(64)
                except BlockingIOError:
                    break
                got[key.data] += 1
        now = time.monotonic()
        if events:
            quiet_since = now
        elif os.path.exists(stop) and now - quiet_since > 1.0:
            return {"received": got}


def main(argv: list[str]) -> None:
    if argv[0] == "send":
        dst, ports, rate, max_n, stop = argv[1:6]
        out = send(dst, [int(p) for p in ports.split(",")], float(rate), int(max_n), stop)
    else:
        ports, ready, stop = argv[1:4]
        out = recv([int(p) for p in ports.split(",")], ready, stop)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
