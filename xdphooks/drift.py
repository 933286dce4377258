"""``xdphooks reconcile --check``: does the kernel run what the installed plugins
want? Read-only, for configuration management check modes (Ansible ``--check``,
Salt ``test=True``, Puppet ``--noop``) and monitoring.

The answer comes from the same ``coordinator.gather`` + planner that
``reconcile`` and ``plan`` use (one rule for "what should run"), but nothing
the coordinator writes is touched: no lock, no bpffs mount, no pins, no state
file, no change log. An interface is in sync when its planned change is
``keep`` and not refused; anything else is drift, described by kind:

- ``missing``: plugins want a chain and none of ours is attached (e.g. after a
  manual ``ip link set DEV xdp off``, or a new interface not yet reconciled);
- ``foreign``: another XDP program holds the interface (reconcile refuses it
  without ``--takeover``);
- ``out of date``: our chain runs but is not the chain the plugins want now
  (a package upgraded or removed, the config changed);
- ``stale``: our chain runs where no plugin wants one any more;
- ``refused``: reconcile would refuse the change (a broken plugin, a refused
  object); the old chain keeps running.

Exit codes (documented in docs/admin-guide.md): 0 in sync, 4 drift, 1 the
check itself failed (not root, unreadable config), 2 usage.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from .errors import fix_suffix
from .model import Change, InterfaceRef
from .paths import Paths

if TYPE_CHECKING:  # annotations only
    from .coordinator import Observed
    from .metrics import Family


@dataclass(frozen=True)
class Drift:
    interface: InterfaceRef
    kind: str  # missing | foreign | out of date | stale | refused
    detail: str

    def line(self) -> str:
        return f"{self.interface}: {self.kind}: {self.detail}"


@dataclass
class Report:
    in_sync: dict[InterfaceRef, bool] = field(default_factory=dict)
    drift: list[Drift] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drift


def check(paths: Paths, disable: frozenset[str] = frozenset(),
          interfaces: tuple[str, ...] = ()) -> Report:
    from .coordinator import Options, gather, require_root

    require_root("reconcile --check", reads=True)
    sess = gather(paths, Options(disable=disable, interfaces=interfaces))
    rep = Report(problems=[str(p) for p in sess.plan.problems], warnings=list(sess.warnings))
    for c in sess.plan.changes:
        d = _describe(c, sess.observed.get(c.interface))
        rep.in_sync[c.interface] = d is None
        if d is not None:
            rep.drift.append(d)
    return rep


def _chain(names: Iterable[str]) -> str:
    return " → ".join(names) if names else "∅"


def _describe(c: Change, obs: Observed | None) -> Drift | None:
    """None if the interface is in sync, else what differs (one line)."""
    iface = c.interface
    want = _chain(c.desired.names if c.desired else ())
    if c.refused:
        # the planner's foreign refusal is the one that offers --takeover
        kind = "foreign" if "--takeover" in c.reason else "refused"
        return Drift(iface, kind, f"wanted {want}; reconcile would refuse the change "
                                  f"({c.reason.removeprefix('refused: ')}), so what runs stays")
    if c.action == "keep":
        return None
    if c.action == "attach":
        rec = obs.record if obs is not None else None
        if obs is not None and obs.attached_id and not obs.ours:
            return Drift(iface, "foreign", f"program id {obs.attached_id} is attached, not "
                                           f"xdphooks' chain; wanted {want}")
        if rec is not None:
            return Drift(iface, "missing", f"no XDP program attached; the recorded chain "
                         f"(generation {rec.generation}, program id {rec.prog_id}: "
                         f"{_chain([p.name for p in rec.programs])}) is gone; wanted {want}")
        return Drift(iface, "missing", f"no chain attached; wanted {want}")
    if c.action == "detach":
        return Drift(iface, "stale", f"running {_chain(c.running_names)}; no plugin wants "
                                     "a chain here")
    return Drift(iface, "out of date", f"running {_chain(c.running_names)}, wanted {want} "
                                       f"({c.reason})")


# --- metrics ---------------------------------------------------------------------


def boot_time() -> float | None:
    """When the machine booted (Unix time), from /proc/stat's btime."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def families(paths: Paths, data: dict[str, Any]) -> list[Family]:
    """Metric families for ``xdphooks metrics``: per-interface sync (root only: the
    check reads pins), the last successful and failed reconcile, boot time."""
    from .errors import XdphooksError
    from .metrics import Family

    in_sync = Family("xdphooks_interface_in_sync", "gauge",
                     "1 if the interface runs the chain the installed plugins want "
                     "(reconcile --check), 0 if it drifted")
    check_ok = Family("xdphooks_sync_check_success", "gauge",
                      "1 if the drift check (reconcile --check) could run, else 0")
    if data.get("root"):
        try:
            rep = check(paths)
        except XdphooksError:
            check_ok.add(0)
        else:
            check_ok.add(1)
            for iface, ok in sorted(rep.in_sync.items(), key=lambda kv: str(kv[0])):
                in_sync.add(1 if ok else 0, interface=iface.name, netns=iface.netns)
    lr = data.get("last_run") or {}
    last_success = Family("xdphooks_last_reconcile_success_timestamp_seconds", "gauge",
                          "When a reconcile last finished without a failed change (Unix time)")
    last_failure = Family("xdphooks_last_reconcile_failure_timestamp_seconds", "gauge",
                          "When a reconcile last had a failed change (Unix time)")
    if lr.get("last_success"):
        last_success.add(lr["last_success"])
    if lr.get("last_failure"):
        last_failure.add(lr["last_failure"])
    boot = Family("xdphooks_boot_timestamp_seconds", "gauge",
                  "When the machine booted (Unix time): a reconcile older than this did "
                  "not run since boot")
    if (bt := boot_time()) is not None:
        boot.add(bt)
    return [in_sync, check_ok, last_success, last_failure, boot]


def run_times(prev: dict[str, Any], failed: bool,
              now: float | None = None) -> dict[str, Any]:
    """The last_run fields that outlive one run: when reconcile last succeeded and
    last failed (a failed change on some interface)."""
    now = time.time() if now is None else now
    return {"last_success": prev.get("last_success") if failed else now,
            "last_failure": now if failed else prev.get("last_failure")}


def main(args: argparse.Namespace, paths: Paths) -> int:
    import sys

    from .cli import EXIT_DRIFT, EXIT_OK

    rep = check(paths, frozenset(args.disable), tuple(args.interface))
    for w in rep.warnings:
        print(f"xdphooks: warning: {w}", file=sys.stderr)
    for p in rep.problems:
        print(f"xdphooks: {p}", file=sys.stderr)
    for d in rep.drift:
        print(f"drift    {d.line()}")
    if not args.quiet:
        n = len(rep.in_sync)
        print(f"in sync: {n} interface{'s' if n != 1 else ''}" if rep.ok else
              f"{len(rep.drift)} of {n} interface{'s' if n != 1 else ''} drifted"
              + fix_suffix("xdphooks reconcile (see 'xdphooks plan')"))
    return EXIT_OK if rep.ok else EXIT_DRIFT
