#!/usr/bin/env python3
"""Regenerate the sample outputs in docs/*.md and README.md from real runs.

    scripts/doc-samples.py [--docs-root DIR] [--list] [--print]   (as root, in a checkout)

Every fenced block preceded by a marker line ``<!-- sample: NAME -->`` is rewritten
with what the commands of sample NAME print when this script runs them: a real chain
on a real veth, built by this checkout's xdphooks (``.venv``), in the walkthrough's
private root. ``--docs-root DIR`` rewrites the copies under DIR instead of the
checkout's (tests/test_doc_samples.py uses it); ``--list`` prints the sample names,
``--print`` the blocks without rewriting anything. ``DOC_SAMPLES_TIMES=1`` prints each
step's time. About 45 s.

Where it runs: a private mount namespace (``unshare -m``) with a tmpfs on /tmp and on
/run/netns, so the walkthrough's own names are real and touch nothing else on the
host: namespaces ``blue`` and ``red``, ``veth0``/``veth1`` (MACs 02:00:00:00:00:01
and :02), ``/tmp/xh`` as the private root, a bpffs at ``/tmp/xh-bpffs``,
``/tmp/portdrop`` made by packaging/new_plugin.py with the plugin guide's own C
source and hook module. IPv6 is off on both veths and each side has a permanent
neighbour entry for the other, so the counters show only the packets the samples send
(no neighbour discovery or ARP); the live views' traffic is a fixed number of frames
built by the script (IP id 0, source port 57596), so their counts and captures are the
same in every run. Everything vanishes with the namespace. Each line
of a block is shell text run by bash, where ``xdphooks`` is this checkout's
(``XDPHOOKS_ROOT=/tmp/xh XDPHOOKS_BPFFS=/tmp/xh-bpffs``) and ``xh`` is
``xdphooks --root /tmp/xh --bpffs /tmp/xh-bpffs``; every line runs as root (``#``).

Normalisation (the volatile parts; one place, ``Normaliser``):

- kernel program ids (any number of 3 or more digits that is the id of a BPF program
  loaded during the run and alive after a ``status`` step, or follows ``id `` or
  ``prog_id="``) become 3401, 3402, ...
  in order of first appearance; in a table column (two or more spaces before the id)
  the column keeps its width;
- wall-clock times ``YYYY-MM-DD HH:MM:SS`` (and ``"time": EPOCH`` in JSON) become
  2026-12-08 10:00:00 plus 5 s per state-changing step (a ``reconcile``,
  ``teardown``, ``--live`` or ``--profile`` line): the time of the step the event
  happened in. The script starts each such step on a fresh second so that this is
  exact. Times of day (a watch lease's ``since … until …``, keeping its span) become
  that step's; with microseconds (live trace lines, tcpdump) the step's plus 0.1 s per
  packet line, a trace line and its pcap record (within 2 µs) alike;
- process ids (``pid N``) become 4242;
- times since boot (``1234.567890``) become 4911.718917 plus 0.25 s per distinct
  value, in order of first appearance;
- ephemeral UDP source ports of the packets sent from ``red`` (``198.18.0.2:N``,
  N >= 32768) become 40001, 40002, ... in order of first appearance;
- this checkout's path becomes ``/usr/lib/xdphooks/python`` (where the packages put
  the module), and TZ is UTC.

The kernel release and libbpf version stay as this host has them (``doctor``); the
configuration says ``mode = "static"`` so that no other block depends on the kernel.

The comparison (``comparable``, tests/test_doc_samples.py) also masks what no run
repeats: a live view's duration (``N packet(s) in X s``) and every figure of a profile;
and what describes the kernel in ``doctor`` (release, libbpf, capability lines).
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_PY = REPO / ".venv" / "bin" / "python"
DOCS = ("docs/plugin-guide.md", "docs/admin-guide.md", "docs/architecture.md",
        "docs/protocol.md", "docs/status-json.md", "docs/kernels.md", "README.md")
#: a marked block: the marker, then a fenced block at the marker's indentation
MARKED = re.compile(r"(?m)^(?P<ind>[ ]*)<!-- sample: (?P<name>[\w-]+) -->\n"
                    r"(?P=ind)```(?P<lang>[\w-]*)\n(?P<body>(?:.*?\n)?)(?P=ind)```[ ]*$", re.S)
ROOT, BPFFS, PLUGIN = "/tmp/xh", "/tmp/xh-bpffs", "/tmp/portdrop"
#: the names the walkthrough makes under its private /tmp (a checkout there must not be one)
WALKTHROUGH_NAMES = {"xh", "xh-bpffs", "portdrop", "example", "live.out", "rpmbuild",
                     "sender.pid", "tracer.pid"}
PRELUDE = (f"src={shlex.quote(str(REPO))}\n"
           # this tree's xdphooks, whatever the venv has installed
           f"xdphooks() {{ PYTHONPATH=\"$src\" {shlex.quote(str(VENV_PY))} -m xdphooks \"$@\"; }}\n"
           f"xh() {{ xdphooks --root {ROOT} --bpffs {BPFFS} \"$@\"; }}\n")
#: a line that changes state (so its times are the step's: see normalise)
CHANGING = re.compile(r"\b(reconcile|teardown)\b(?!.*--check)|--live|--profile")
BASE_TIME = calendar.timegm((2026, 12, 8, 10, 0, 0, 0, 0, 0))
STEP_SECONDS, BOOT_BASE, BOOT_STEP, ID_BASE, PORT_BASE = 5, 4911.718917, 0.25, 3401, 40001


@dataclass
class Step:
    samples: tuple[str, ...]  # the samples this line belongs to
    line: str                 # shell text, run as it is shown
    show: bool = True         # False: only its output is the block (the command is in prose)
    run: str | None = None    # shell text run instead of ``line``: ``line`` itself, with
                              # what must happen around it (traffic) arranged there
    timed: bool = True        # False: a changing step whose times no later block shows
                              # (it starts without waiting for a fresh second)


def S(samples: str, line: str, run: str | None = None) -> Step:
    return Step(tuple(samples.split()), line, True, run)


def O(samples: str, line: str) -> Step:
    return Step(tuple(samples.split()), line, False)


def H(line: str) -> Step:
    """A hidden step: run, in no block."""
    return Step((), line, False)


def untimed(step: Step) -> Step:
    return replace(step, timed=False)


def _guide_block(heading: str, lang: str) -> str:
    """The first ```lang block after ``heading`` in the plugin guide: the samples run
    the guide's own source, not a copy of it."""
    text = (REPO / "docs" / "plugin-guide.md").read_text()
    rest = text[text.index(heading):]
    return re.search(rf"```{lang}\n(.*?)\n```", rest, re.S).group(1) + "\n"


def _quoted_file(path: str, text: str) -> str:
    return f"cat > {path} <<'XDPH_EOF'\n{text}XDPH_EOF"


#: a plugin of the live views' chain (the test suite's objects)
LIVE_PLUGIN = """from xdphooks import XdpProgram, hookimpl


@hookimpl
def xdphooks_programs():
    return [XdpProgram(name={name!r}, object={obj!r}, priority={prio})]
"""
#: n UDP/9 datagrams from red, gap seconds apart, in the background: one frame built here,
#: IP id 0 and a fixed source port, so that captures of it are the same in every run
#: (the kernel gives a socket's datagrams IP ids of its own choosing)
SENDER = ("ip netns exec red python3 -c '" + """import socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst, payload = bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1]), b"xdphooks"
udp = struct.pack("!HHHH", 57596, 9, 8 + len(payload), 0) + payload
pseudo = src + dst + struct.pack("!BBH", 0, 17, len(udp))
udp = udp[:6] + struct.pack("!H", csum(pseudo + udp)) + udp[8:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
frame = bytes.fromhex("020000000001" "020000000002" "0800") + ip + udp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("veth1", 0))
for _ in range(int(sys.argv[1])):
    s.send(frame)
    time.sleep(float(sys.argv[2]))
""" + "' {n} {gap} >/dev/null 2>&1 & echo $! > /tmp/sender.pid")
WAIT_SENDER = "while kill -0 $(cat /tmp/sender.pid) 2>/dev/null; do sleep 0.1; done"
ADJUST = ("xdphooks trace --live blue/veth0 adjust --count 2 --capture entry,exit "
          "--pcap adjust.pcapng")
#: until status shows a watch in place; at most 20 s (a tracer that failed: its output)
WAIT_WATCH = ("n=0; until xdphooks status | grep -q watched; do n=$((n + 1)); "
              "[ $n -lt 100 ] || { cat /tmp/live.out 2>/dev/null; echo 'no watch started'; "
              "exit 1; }; sleep 0.2; done")


def scenario() -> list[Step]:
    send = "ip netns exec red bash -c 'echo x > /dev/udp/198.18.0.1/{}'"
    cfg = f"{ROOT}/etc/xdphooks/xdphooks.toml"
    return [
        # plugin guide, sections 1 and 2: the template copied, the guide's program built
        O("pg-new-plugin", 'DEBFULLNAME="Ada Admin" DEBEMAIL=ada@example.org '
          '$src/packaging/new_plugin.py portdrop --dest /tmp/portdrop --licence GPL-2.0-only '
          '--summary "xdphooks plugin: drop UDP to listed ports" '
          '--description "Drops UDP packets whose destination port is in a map."'),
        H(_quoted_file(f"{PLUGIN}/portdrop.bpf.c", _guide_block("## 2. The BPF program", "c"))),
        H(_quoted_file(f"{PLUGIN}/portdrop.py", _guide_block("## 3. The hook module", "python"))),
        O("pg-make", "cd /tmp/portdrop && make VERSION=1.0"),
        # section 5: the guide's own rpmbuild command, then what the package holds
        H(_guide_block("## 5. Package it for rpm", "sh").strip()),
        S("pg-rpm", "rpm -qlp /tmp/rpmbuild/RPMS/x86_64/xdphooks-portdrop-1.0-1.x86_64.rpm"),
        S("pg-rpm", "rpm -qp --requires /tmp/rpmbuild/RPMS/x86_64/xdphooks-portdrop-1.0-1.x86_64.rpm"
                    " | grep xdphooks"),
        # section 4: the private root and the veth (as the guide's sh block, plus what
        # keeps the counters exact: fixed MACs, no IPv6, a permanent neighbour entry)
        H("ip netns add blue && ip netns add red"),
        H("for ns in blue red; do ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1"
          " net.ipv6.conf.default.disable_ipv6=1; done"),
        H("ip -n blue link add veth0 address 02:00:00:00:00:01 type veth peer name veth1 "
          "address 02:00:00:00:00:02 netns red"),
        H("ip -n blue addr add 198.18.0.1/24 dev veth0 && ip -n red addr add 198.18.0.2/24 dev veth1"),
        H("ip -n blue link set veth0 up && ip -n red link set veth1 up"),
        H("ip -n red neigh replace 198.18.0.1 lladdr 02:00:00:00:00:01 dev veth1 nud permanent"),
        H("ip -n blue neigh replace 198.18.0.2 lladdr 02:00:00:00:00:02 dev veth0 nud permanent"),
        H(f"install -D -m 0644 /tmp/portdrop/portdrop.py {ROOT}/usr/lib/xdphooks/plugins/portdrop.py"),
        H(f"install -D -m 0644 /tmp/portdrop/portdrop.bpf.o {ROOT}/usr/lib/xdphooks/bpf/portdrop.bpf.o"),
        # mode pinned to static: "auto" would pick freplace on a kernel that allows it,
        # and every block would then depend on the kernel the samples run on
        H(f"mkdir -p {ROOT}/etc/xdphooks && printf '%s\\n' 'mode = \"static\"' "
          f"'default_interfaces = [\"blue/veth0\"]' > {cfg}"),
        S("pg-plan", "xh plan"),
        S("pg-reconcile ag-reconcile", "xh reconcile"),
        S("pg-reconcile ag-reconcile", "xh reconcile"),
        S("pg-trace", f"bpftool map update pinned {BPFFS}/xdphooks/maps/portdrop/ports "
          "key 9 0 value 0 0 0 0 0 0 0 0"),
        S("pg-trace ag-trace", "xh trace blue/veth0 --udp '198.18.0.2:4000->198.18.0.1:9'"),
        S("pg-trace", "xh trace blue/veth0 --udp '198.18.0.2:4000->198.18.0.1:53'"),
        S("pg-status", send.format(9)),
        S("pg-status", send.format(53)),
        S("pg-status", "xh status"),
        S("pg-status", "xh status --brief"),
        S("pg-status", f"bpftool map dump pinned {BPFFS}/xdphooks/maps/portdrop/ports"),
        # next to the template's example, with the admin's drop=log
        S("pg-policy", "cp -r $src/plugins/template /tmp/example && make -s -C /tmp/example VERSION=1.0"),
        S("pg-policy", f"install -m 0644 /tmp/example/example.py {ROOT}/usr/lib/xdphooks/plugins/"),
        S("pg-policy", f"install -m 0644 /tmp/example/example.bpf.o {ROOT}/usr/lib/xdphooks/bpf/"),
        S("pg-policy ag-policy",
          f"printf '[programs.portdrop]\\npolicy = {{ drop = \"log\" }}\\n' >> {cfg}"),
        S("pg-policy ag-policy", "xh reconcile"),
        S("pg-policy ag-policy", "xh trace blue/veth0 --udp '198.18.0.2:4000->198.18.0.1:9'"),
        S("pg-policy", send.format(9)),
        S("pg-policy", "xh events"),
        S("pg-policy", "xh status"),
        S("pg-policy", "xh history"),
        # the admin guide's views of the same chain
        S("ag-status", "xdphooks status"),
        S("ag-status-brief", "xdphooks status --brief"),
        S("ag-events", "xdphooks events"),
        S("ag-history", "xdphooks history"),
        S("ag-history-json", "xdphooks history -n 1"),
        S("ag-history-json", "xdphooks history -n 1 --json"),
        # the drift check, then the chain back
        S("ag-check", "xdphooks reconcile --check"),
        S("ag-check", "ip -n blue link set veth0 xdp off"),
        S("ag-check", 'xdphooks reconcile --check; echo "exit $?"'),
        untimed(H("xdphooks reconcile")),
        S("ag-plan", "xdphooks --disable example plan"),
        H(f"mkdir -p {ROOT}/etc/xdphooks/plugins"),
        S("ag-mask", f"ln -s /dev/null {ROOT}/etc/xdphooks/plugins/example.py"),
        S("ag-mask", "xdphooks plan"),
        S("ag-mask", "xdphooks doctor | grep example"),
        H(f"rm {ROOT}/etc/xdphooks/plugins/example.py"),
        S("ag-doctor", "xdphooks doctor"),
        # xdp_mode: the warning, then the switch in a maintenance window
        # at the top: after the [programs.portdrop] table it would belong to the table
        S("ag-xdp-mode", f"sed -i '1i xdp_mode = \"skb\"' {cfg}"),
        S("ag-xdp-mode", "xdphooks plan"),
        untimed(S("ag-xdp-switch", "xdphooks teardown blue/veth0")),
        untimed(S("ag-xdp-switch", "xdphooks reconcile")),
        S("ag-xdp-switch", "xdphooks status | grep gen"),
        untimed(S("ag-teardown", "xdphooks teardown --all")),
        # live views: counter -> udp9 (TX for UDP/9, policy tx=log) -> adjust (strips 4
        # bytes), the test suite's objects, while red sends UDP/9 at 10 datagrams a second
        H(f"rm {ROOT}/usr/lib/xdphooks/plugins/*.py && printf '%s\\n' "
          "'mode = \"static\"' 'default_interfaces = [\"blue/veth0\"]' '[programs.udp9]' "
          "'policy = { tx = \"log\" }' "
          f"> {cfg}"),
        *[H(f"clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -I$src/bpf -c "
            f"$src/tests/bpf/{src}.bpf.c -o {ROOT}/usr/lib/xdphooks/bpf/{src}.o && "
            + _quoted_file(f"{ROOT}/usr/lib/xdphooks/plugins/{name}.py", LIVE_PLUGIN.format(
                name=name, obj=f"{src}.o", prio=prio)))
          for name, src, prio in (("counter", "sv_count", 10), ("udp9", "sv_udp9_tx", 20),
                                  ("adjust", "fr_adjust", 30))],
        H("xdphooks reconcile -q"),
        # the trace in the background, 10 datagrams once its watch is in place
        S("ag-live", "xdphooks trace --live blue/veth0 udp9 --count 3",
          run="xdphooks trace --live blue/veth0 udp9 --count 3 > /tmp/live.out 2>&1 & "
              + WAIT_WATCH + "; "
              + SENDER.format(n=10, gap=0.05) + "; " + WAIT_SENDER + "; wait; cat /tmp/live.out"),
        # both sides of a component that rewrites the packet, and their capture
        S("ag-adjust", ADJUST,
          run=f"{ADJUST} > /tmp/live.out 2>&1 & " + WAIT_WATCH + "; "
              + SENDER.format(n=4, gap=0.1) + "; " + WAIT_SENDER + "; wait; cat /tmp/live.out"),
        S("ag-adjust", "tcpdump -r adjust.pcapng -nn -e -x"),
        # a watch in the background (its lease shows in status), ended by SIGTERM
        # (python itself in the background, so that $! is the tracer's pid)
        H(f"PYTHONPATH=$src {VENV_PY} -m xdphooks trace --live blue/veth0 counter --seconds 60 "
          "--count 1000 > /tmp/live.out 2>&1 & echo $! > /tmp/tracer.pid; "
          + WAIT_WATCH),
        S("ag-watched", "xdphooks status"),
        H("kill -TERM $(cat /tmp/tracer.pid); while kill -0 $(cat /tmp/tracer.pid) 2>/dev/null; "
          "do sleep 0.1; done"),
        H(SENDER.format(n=40, gap=0.1)),
        untimed(S("ag-profile", "xdphooks status --profile 1")),
        H(WAIT_SENDER),
        S("ag-metrics", "xdphooks metrics | grep -E 'chain_generation|program_info|"
          "program_packets|program_verdicts_total.*udp9|last_reconcile_(success|info)[ {]'"),
    ]


# --- running (inside the private mount namespace) ---------------------------------


def _object_ids() -> set[int]:
    """Ids of every BPF program, map and link alive now (see normalise)."""
    ids: set[int] = set()
    for kind in ("prog",):  # maps and links are not shown; "id N" is an id by context
        proc = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True)
        try:
            ids |= {o["id"] for o in json.loads(proc.stdout or "[]") if "id" in o}
        except (json.JSONDecodeError, TypeError):
            pass
    return ids


def _under_tmp() -> list[str]:
    """Top-level /tmp entries holding what the run reads: the checkout and the Python
    environment (a CI clone or a pytest tmp dir often lives under /tmp)."""
    tops = set()
    for path in (REPO, Path(sys.prefix), Path(sys.executable).parent):
        parts = Path(os.path.realpath(path)).parts
        if len(parts) > 2 and parts[1] == "tmp":
            tops.add(parts[2])
    return sorted(tops)


def _private_tmp() -> None:
    """A tmpfs on /tmp (and /run/netns) for the walkthrough's own names; whatever the run
    reads from the old /tmp is bound back at its own path, through a directory fd kept
    open across the mount (the old /tmp is hidden once the tmpfs is on it)."""
    keep = {top: os.open(f"/tmp/{top}", os.O_RDONLY | os.O_DIRECTORY) for top in _under_tmp()}
    for mnt in ("/tmp", "/run/netns"):
        os.makedirs(mnt, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", mnt], check=True)
    for top, fd in keep.items():
        if top in WALKTHROUGH_NAMES:
            raise SystemExit(f"doc-samples: /tmp/{top} is one of the walkthrough's own "
                             "names — fix: run it from a checkout elsewhere")
        os.mkdir(f"/tmp/{top}")
        subprocess.run(["mount", "--no-canonicalize", "--bind", f"/proc/self/fd/{fd}",
                        f"/tmp/{top}"],
                       check=True, pass_fds=(fd,))
        os.close(fd)


def run_inner() -> dict:
    """Run the scenario; the raw outputs, the ids seen and the steps' start seconds."""
    _private_tmp()
    os.makedirs(BPFFS)
    subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], check=True)
    env = {**os.environ, "XDPHOOKS_ROOT": ROOT, "XDPHOOKS_BPFFS": BPFFS, "TZ": "UTC",
           "XDPHOOKS_NO_SYSLOG": "1", "LC_ALL": "C.UTF-8", "COLUMNS": "200"}
    env.pop("XDPHOOKS_LIBDIR", None)
    outputs, ids, starts = [], set(), []
    # ids only grow: a program loaded before the run is not ours, and a number of the
    # output that happens to equal its id (a hex group of a capture, 0009) stays as it is
    floor = max(_object_ids(), default=0)
    for step in scenario():
        if step.timed and CHANGING.search(step.line):
            time.sleep(1.02 - time.time() % 1)  # a fresh second: its times are this step's
            starts.append(int(time.time()))
        t_step = time.monotonic()
        proc = subprocess.run(["bash", "-c", PRELUDE + (step.run or step.line)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd="/tmp", env=env, timeout=120, stdin=subprocess.DEVNULL)
        if step.samples and "echo \"exit" not in step.line and proc.returncode not in (0,) \
                and "grep" not in step.line:
            raise SystemExit(f"doc-samples: `{step.line}` exited {proc.returncode}:\n"
                             f"{proc.stdout}")
        if not step.samples and proc.returncode != 0:
            raise SystemExit(f"doc-samples: setup `{step.line}` exited {proc.returncode}:\n"
                             f"{proc.stdout}")
        if step.samples and "status" in step.line:  # elsewhere ids are known by context
            ids |= {i for i in _object_ids() if i > floor}
        outputs.append(proc.stdout)
        if os.environ.get("DOC_SAMPLES_TIMES"):  # where the time goes
            print(f"{time.monotonic() - t_step:6.2f} s  {step.line[:90]!r}", file=sys.stderr)
    return {"outputs": outputs, "ids": sorted(ids), "starts": starts}


# --- normalising and composing ------------------------------------------------------


class Normaliser:
    """The rules in the module docstring, with their mappings kept across blocks."""

    def __init__(self, ids, starts):
        self.ids, self.starts = set(ids), starts
        self.id_map: dict[str, str] = {}
        self.boot_map: dict[str, str] = {}
        self.port_map: dict[str, str] = {}
        self.frac_seen: dict[int, int] = {}
        self.clock_map: dict[tuple[str, int], str] = {}

    def _step_time(self, epoch: float) -> int:
        k = max(bisect.bisect_right(self.starts, int(epoch)) - 1, 0)
        return BASE_TIME + STEP_SECONDS * k

    def _id(self, m: re.Match) -> str:
        pad, num = m.group(1), m.group(2)
        if int(num) not in self.ids:
            return m.group(0)
        new = self.id_map.setdefault(num, str(ID_BASE + len(self.id_map)))
        if len(pad) < 2:  # running text: the id alone changes
            return pad + new
        return " " * max(len(pad) + len(num) - len(new), 1) + new  # a column: same width

    def _clock(self, hms: str, frac: str = "") -> str:
        """A time of day (live views, watch leases): the step's, plus 0.1 s per packet
        line already shown in that step when it has microseconds."""
        h, m, sec = map(int, hms.split(":"))
        day = self.starts[0] - self.starts[0] % 86400 if self.starts else 0
        t = self._step_time(day + h * 3600 + m * 60 + sec)
        if not frac:
            return time.strftime("%H:%M:%S", time.gmtime(t))
        for seen, new in self.clock_map.items():  # a packet's trace line and its pcap
            if seen[0] == hms and abs(seen[1] - int(frac)) <= 2:  # record (µs rounding)
                return new
        k = self.frac_seen.get(t, 0)
        self.frac_seen[t] = k + 1
        new = time.strftime("%H:%M:%S", time.gmtime(t + k // 10)) + ".%06d" % (k % 10 * 100000)
        self.clock_map[(hms, int(frac))] = new
        return new

    def _lease(self, m: re.Match) -> str:
        since, until = m.group(1), m.group(2)
        span = (sum(int(x) * f for x, f in zip(until.split(":"), (3600, 60, 1)))
                - sum(int(x) * f for x, f in zip(since.split(":"), (3600, 60, 1)))) % 86400
        new = self._clock(since)
        h, mi, sec = map(int, new.split(":"))
        return f"since {new} until " + time.strftime("%H:%M:%S", time.gmtime(
            h * 3600 + mi * 60 + sec + span))

    def __call__(self, text: str) -> str:
        text = text.replace(str(REPO), "/usr/lib/xdphooks/python")
        # numbers that are ids by their context, whether or not the object still lives
        self.ids |= {int(n) for n in re.findall(r'(?:\bid |prog_id=")(\d+)', text)}
        text = re.sub(r"\bpid \d+", "pid 4242", text)
        text = re.sub(r"since (\d\d:\d\d:\d\d) until (\d\d:\d\d:\d\d)", self._lease, text)
        text = re.sub(r"(?m)^(\d\d:\d\d:\d\d)\.(\d{6})\b",
                      lambda m: self._clock(m.group(1), m.group(2)), text)
        text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lambda m: time.strftime(
            "%Y-%m-%d %H:%M:%S", time.gmtime(self._step_time(
                calendar.timegm(time.strptime(m.group(0), "%Y-%m-%d %H:%M:%S"))))), text)
        text = re.sub(r'"time": (\d+(?:\.\d+)?)', lambda m: '"time": %.5f' % (
            self._step_time(float(m.group(1))) + 0.50499), text)
        text = re.sub(r"(?<![\d.:])(\d{3,}\.\d{6})(?![\d.])", lambda m: f"{self.boot_map.setdefault(m.group(1), '%.6f' % (BOOT_BASE + BOOT_STEP * len(self.boot_map))):>{len(m.group(1))}}", text)
        text = re.sub(r"(?<=198\.18\.0\.2:)(\d{5})\b", lambda m: m.group(1) if int(m.group(1))
                      < 32768 else self.port_map.setdefault(m.group(1),
                                                            str(PORT_BASE + len(self.port_map))),
                      text)
        return re.sub(r"( *)(?<![\w.:/-])(\d{3,})(?![\w.%-])", self._id, text)


def shown(sample: str, line: str) -> str:
    """How a line reads in its doc: the admin guide's private root comes from the
    environment (XDPHOOKS_ROOT, XDPHOOKS_BPFFS), so its ``xh CMD`` is ``xdphooks CMD``."""
    return re.sub(r"^xh ", "xdphooks ", line) if sample.startswith("ag-") else line


def compose(result: dict) -> dict[str, str]:
    """{sample name: block body}, normalised."""
    norm = Normaliser(result["ids"], result["starts"])
    blocks: dict[str, list[str]] = {}
    for step, out in zip(scenario(), result["outputs"]):
        out = norm(out)
        for name in step.samples:
            body = blocks.setdefault(name, [])
            if step.show:
                body.append(f"# {shown(name, step.line)}\n")
            body.append(out)
    return {name: "".join(parts).rstrip("\n") for name, parts in blocks.items()}


#: what a comparison ignores (tests/test_doc_samples.py): measured durations and costs,
#: which no run repeats; the rest of the line still has to match
DURATION = re.compile(r"(\d+ packet\(s\) in )\d+\.\d+ s")
PROFILED = ("ag-profile",)  # every figure is a measurement
#: doctor lines that describe the kernel and libbpf the samples ran on: the comparison
#: keeps their names and masks what follows, so another kernel's doctor still matches
KERNEL_FACTS = re.compile(r"^(\[info\] kernel:|\[ok  \] libbpf\S*:|\[info\] BPF_PROG_TYPE_EXT"
                          r"[^:]*:|\[info\] freplace \(dynamic linking\) works:"
                          r"|\[info\] capability \w+:).*$", re.M)


def comparable(name: str, body: str) -> str:
    """``body`` with its measured figures masked: live views' durations, and every
    number of a profile; the rest of each line still has to match."""
    body = DURATION.sub(r"\1N s", body)
    if name == "ag-doctor":
        body = KERNEL_FACTS.sub(r"\1 (this kernel's)", body)
    if name in PROFILED:
        body = "\n".join(ln if ln.startswith("#") else re.sub(r" *\d+(?:\.\d+)?", " N", ln)
                         for ln in body.split("\n"))
    return body


def sample_names() -> list[str]:
    return sorted({n for s in scenario() for n in s.samples})


def rewrite(docs_root: Path, blocks: dict[str, str]) -> list[str]:
    """Rewrite every marked block under docs_root; the names rewritten. A marker with no
    sample of that name is an error (a typo would otherwise leave its block stale)."""
    done = []
    for rel in DOCS:
        path = docs_root / rel
        if not path.exists():
            continue
        text = path.read_text()

        def fill(m: re.Match) -> str:
            name, ind = m.group("name"), m.group("ind")
            if name not in blocks:
                raise SystemExit(f"doc-samples: {rel}: no sample named {name!r} — fix: use one "
                                 f"of {', '.join(sorted(blocks))}")
            done.append(name)
            old = "\n".join(ln[len(ind):] for ln in m.group("body").rstrip("\n").split("\n"))
            if comparable(name, old) == comparable(name, blocks[name]):
                return m.group(0)  # only measured figures differ: keep the diff quiet
            body = "\n".join(ind + ln if ln else ln for ln in blocks[name].split("\n"))
            return f"{ind}<!-- sample: {name} -->\n{ind}```{m.group('lang')}\n{body}\n{ind}```"

        new = MARKED.sub(fill, text)
        if new != text:
            path.write_text(new)
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs-root", type=Path, default=REPO)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--print", action="store_true", help="print the blocks, rewrite nothing")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.list:
        print("\n".join(sample_names()))
        return 0
    if args.inner:
        json.dump(run_inner(), sys.stdout)
        return 0
    if os.geteuid() != 0:
        print("doc-samples: needs root (it builds real chains on a private veth) — fix: "
              "sudo scripts/doc-samples.py", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           str(Path(__file__).resolve()), "--inner"],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(proc.stderr.strip() or proc.stdout[-2000:], file=sys.stderr)
        return 1
    sys.stderr.write(proc.stderr)  # DOC_SAMPLES_TIMES=1: each step's time
    blocks = compose(json.loads(proc.stdout))
    if args.print:
        for name, body in sorted(blocks.items()):
            print(f"=== {name}\n{body}")
        return 0
    done = rewrite(args.docs_root.resolve(), blocks)
    unused = sorted(set(blocks) - set(done))
    print(f"doc-samples: {len(done)} block(s) rewritten under {args.docs_root} in "
          f"{time.monotonic() - t0:.1f} s" + (f"; not marked anywhere: {', '.join(unused)}"
                                                 if unused else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
