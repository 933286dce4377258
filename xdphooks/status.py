"""``xdphooks status``: a read-only view (``xdphooks events`` is xdphooks/events.py).

Works without root (state file only; kernel facts and counters need root and
are then reported as null). JSON schema: docs/status-json.md — keys are kept
stable, new keys may be added.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from . import state as state_mod
from .model import ACTIONS
from .paths import Paths
from .security import is_root
from .text import LINE_LIMIT, first_line, one_line

VERDICT_KEYS = ACTIONS + ("unknown",)


def _kernel_ok() -> bool:
    return is_root()


def _attached(netns_name: str, ifname: str, ifindex: int = 0) -> int | None:
    from .kernel.xdp import locate
    from .model import InterfaceRef

    # by name, or by the recorded ifindex when the device was renamed since
    return locate(InterfaceRef(netns_name, ifname), ifindex if isinstance(ifindex, int) else 0)[1]


def link_kind(rec, p) -> str:
    """How a program sits in its chain, as the chain's backend says (static: "spliced"
    or "called", as the root generator recorded it; freplace: an EXT program)."""
    from . import backends

    return backends.of(rec).link_kind(p)


def _counters(pin_dir: str, n: int) -> list[dict] | None:
    path = Path(pin_dir) / "counters"
    if not path.exists():
        return None
    try:
        from .counters import read_counters
    except ImportError:
        return None
    try:
        return read_counters(str(path), n)
    except Exception:  # noqa: BLE001 - status must always answer
        return None


def collect(paths: Paths) -> dict:
    st, warning = state_mod.load(paths.state_file, paths.pin_root)
    root = _kernel_ok()
    objects: dict[str, list[str]] = {}
    for rec in st.interfaces.values():
        for p in rec.programs:
            objects.setdefault(p.plugin, []).append(p.object)
    provenance = _provenance(paths, objects)
    out: dict = {"version": 1, "time": time.time(), "root": root, "interfaces": [],
                 "last_run": st.last_run or None, "pending": _pending(paths),
                 "warnings": [warning] if warning else []}
    leases = _leases(paths)
    for key, rec in sorted(st.interfaces.items()):
        attached = _attached(rec.netns, rec.name, rec.ifindex) if root else None
        lease = leases.get(key)
        if lease is not None and attached == lease.watched_id:
            attached = rec.prog_id  # its instrumented build, for the watch (issue 21)
        counters = _counters(rec.pin_dir, len(rec.programs)) if root else None
        progs = []
        for i, p in enumerate(rec.programs):
            c = counters[i] if counters and i < len(counters) else None
            prov = provenance.get(p.plugin, {})
            progs.append({
                "name": p.name, "plugin": p.plugin, "priority": p.priority,
                "policy": p.policy, "prog_id": p.prog_id, "slot": p.slot,
                "link": link_kind(rec, p),
                "object": p.object, "program": p.program, "digest": p.digest,
                "link_reason": p.link_reason or None, "constants": p.constants,
                "maps": p.maps,
                "packets": c["packets"] if c else None,
                "verdicts": {k: c["verdicts"].get(k, 0) for k in VERDICT_KEYS} if c else None,
                "package": prov.get("package"), "modified": prov.get("modified"),
                "verified": _verified(p.object),
            })
        out["interfaces"].append({
            "name": rec.name, "netns": rec.netns or None, "mode": rec.mode,
            "xdp_mode": rec.xdp_mode, "prog_id": rec.prog_id, "ifindex": rec.ifindex,
            "attached": (attached == rec.prog_id) if attached is not None else None,
            "generation": rec.generation, "fingerprint": rec.fingerprint,
            "updated": rec.updated, "trigger": rec.trigger, "programs": progs,
            "watch": {"line": lease.describe(), "pid": lease.pid, "uid": lease.uid,
                      "tty": lease.tty, "since": lease.since, "until": lease.until,
                      "purpose": lease.purpose, "prog_id": lease.watched_id}
            if lease is not None else None,
        })
    return out


def _leases(paths: Paths) -> dict:
    """Watches in progress (xdphooks/watchlease.py), by interface key."""
    try:
        from .watchlease import read_leases
        return read_leases(paths)
    except Exception:  # noqa: BLE001 - status must always answer
        return {}


def _verified(path: str) -> dict | None:
    from .verify import status as verify_status

    try:
        return verify_status(path)
    except Exception:  # noqa: BLE001 - status must always answer
        return None


def _pending(paths: Paths) -> dict | None:
    """The offline-install marker (cli._record_pending), if it is one: read without
    blocking, bounded, and only as a table with a string ``why``."""
    from .errors import XdphooksError
    from .security import read_checked

    try:
        data = json.loads(read_checked(paths.state_dir / "pending", "pending marker",
                                       owners=(0, os.geteuid())))
    except (OSError, ValueError, XdphooksError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("why"), str) else None


def _provenance(paths: Paths, objects: dict[str, list[str]]) -> dict[str, dict]:
    from .provenance import plugin_owners

    try:
        return plugin_owners(paths, objects)
    except Exception:  # noqa: BLE001
        return {}


def _fmt_policy(policy: dict) -> str:
    from .model import VerdictPolicy

    return VerdictPolicy.from_mapping(policy).short()


def render(data: dict, prev: dict | None = None, dt: float = 0.0) -> str:
    lines = []
    rates = {}
    if prev and dt > 0:
        for i in prev["interfaces"]:
            for p in i["programs"]:
                if p["packets"] is not None:
                    rates[(i["netns"], i["name"], p["name"])] = p["packets"]
    head = (f"{'INTERFACE':<22} {'MODE':<9} {'PRIO':>4}  {'PROGRAM':<16} {'ID':>6}  "
            f"{'POLICY':<16} {'PACKETS':>9} {'RATE/s':>8}  {'DROP':>5} {'PASS':>5} {'TX':>4} "
            f"{'REDIR':>5} {'ABRT':>5} {'OTHER':>5}  PACKAGE")
    lines.append(head)
    if not data["interfaces"]:
        lines.append("(no chains attached)")
    for i in data["interfaces"]:
        name = one_line(f"{i['netns']}/{i['name']}" if i["netns"] else i["name"])
        att = {True: "", False: "  !! NOT ATTACHED", None: ""}[i["attached"]]
        lines.append(f"{name:<22} {i['mode']:<9} {'':>4}  {'<chain>':<16} {i['prog_id']:>6}  "
                     f"gen {i['generation']}, {i['xdp_mode']}{att}")
        if i.get("watch"):
            lines.append(one_line(f"{'':<22} {i['watch']['line']}"))
        for p in i["programs"]:
            pk = p["packets"]
            v = p["verdicts"] or {}
            share = (lambda k: f"{100 * v.get(k, 0) / pk:4.0f}%" if pk else "    -")
            rate = ""
            key = (i["netns"], i["name"], p["name"])
            if key in rates and pk is not None:
                rate = f"{(pk - rates[key]) / dt:8.1f}"
            pkg = p.get("package") or "-"
            if p.get("modified"):
                pkg += " (MODIFIED)"
            link = p.get("link") if p.get("link") in ("spliced", "called") else ""
            lines.append(f"{'':<22} {link:<9} {p['priority']:>4}  {p['name']:<16} "
                         f"{p['prog_id']:>6}  {_fmt_policy(p['policy']):<16} "
                         f"{pk if pk is not None else '-':>9} {rate:>8}  {share('drop'):>5} "
                         f"{share('pass'):>5} {share('tx'):>4} {share('redirect'):>5} "
                         f"{share('aborted'):>5} {share('unknown'):>5}  {pkg}")
    called = [(i, p) for i in data["interfaces"] for p in i["programs"] if p.get("link_reason")]
    if called:
        lines.append("")
        for i, p in called:
            lines.append(one_line(f"called, not spliced: {p['name']} on {i['name']}: "
                                  f"{p['link_reason']}", LINE_LIMIT))
    lr = data.get("last_run")
    if lr:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lr.get("time", 0)))
        lines.append("")
        lines.append(f"last reconcile: {when} (trigger {lr.get('trigger')}), "
                     f"{len(lr.get('applied', []))} change(s), {len(lr.get('failed', {}))} failure(s)")
        for iface, msg in (lr.get("failed") or {}).items():
            lines.append(f"  FAILED {one_line(iface)}: {first_line(msg)}")
        for prob in lr.get("problems", []):
            lines.append(f"  {one_line(prob, LINE_LIMIT)}")  # stored plugin text: escaped
    if data.get("pending"):
        lines.append(f"pending: {data['pending'].get('why')} — applied at next boot/reconcile")
    if not data["root"]:
        lines.append("(not root: kernel state and counters not shown)")
    return "\n".join(lines)


def render_brief(data: dict) -> str:
    out = []
    for i in data["interfaces"]:
        name = one_line(f"{i['netns']}/{i['name']}" if i["netns"] else i["name"])
        out.append(f"xdphooks: {name} [{i['mode']}]: "
                   + " → ".join(p["name"] for p in i["programs"]))
    lr = data.get("last_run") or {}
    for iface, msg in (lr.get("failed") or {}).items():
        out.append(f"xdphooks: FAILED {one_line(iface)}: {first_line(msg)}")
    for iface, prog_id in (lr.get("foreign") or {}).items():
        out.append(f"xdphooks: {one_line(iface)}: foreign program {prog_id} attached; "
                   "xdphooks' chain is not running — fix: remove it (ip link set dev IFACE "
                   "xdp off) or run 'xdphooks reconcile --takeover'")
    return "\n".join(out) or "xdphooks: no chains attached"


def _warned(data: dict) -> dict:
    """Say the collection's warnings (a damaged state file) on stderr, one line each."""
    for w in data.get("warnings", []):
        print(f"xdphooks: warning: {w}", file=sys.stderr)
    return data


def main(args, paths: Paths) -> int:
    if getattr(args, "profile", None) is not None:
        from . import profile

        data = profile.profile(paths, args.profile)
        print(json.dumps(data, indent=2) if args.json else profile.render(data))
        return 0
    if args.json:  # warnings are in the JSON ("warnings")
        print(json.dumps(collect(paths), indent=2))
        return 0
    if args.brief:
        print(render_brief(_warned(collect(paths))))
        return 0
    if not args.watch:
        print(render(_warned(collect(paths))))
        return 0
    prev, t_prev = None, 0.0
    try:
        while True:
            data, now = collect(paths), time.monotonic()
            sys.stdout.write("\x1b[H\x1b[2J" + render(data, prev, now - t_prev) + "\n")
            sys.stdout.flush()
            prev, t_prev = data, now
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
