"""``/etc/xdphooks/xdphooks.toml``: the admin's word, which wins over plugins.

Example::

    mode = "auto"                 # auto | freplace | static
    default_interfaces = ["eth0"]
    xdp_mode = "native"           # native | skb
    counters = true
    link = "splice"               # splice | call (static backend)
    disable = ["txbuggy"]         # plugin names
    hook_timeout = 10

    [programs.firewall]
    priority = 5
    policy = { tx = "log" }
    interfaces = ["eth*", "blue/veth0"]
    link = "call"
    enabled = true
    verify = true                 # false: a local build replaces the packaged object
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import AUTO, NAMES
from .errors import PermissionRefused, XdphooksError
from . import state as state_mod
from .model import PRIORITY_MAX, PRIORITY_MIN, Link, VerdictPolicy
from .security import read_trusted

MODES = (AUTO, *NAMES)  # the backends supply their names
XDP_MODES = state_mod.XDP_MODES


@dataclass(frozen=True)
class ProgramOverride:
    priority: int | None = None
    policy: VerdictPolicy | None = None
    interfaces: tuple[str, ...] | None = None
    enabled: bool = True
    link: Link | None = None
    verify: bool = True  # False: a local build replaces the packaged object (verify.py)


@dataclass(frozen=True)
class Config:
    mode: str = AUTO  # AUTO or a backends.Mode
    default_interfaces: tuple[str, ...] = ()
    xdp_mode: str = "native"
    counters: bool = True
    disable: frozenset[str] = frozenset()
    hook_timeout: float = 10.0
    programs: dict[str, ProgramOverride] = field(default_factory=dict)
    link: Link | None = None


#: hook_timeout: (exclusive, inclusive) seconds. An hour is far beyond any sane hook and
#: still a bound: a package transaction must end.
HOOK_TIMEOUT_RANGE = (0.0, 3600.0)


class ConfigError(XdphooksError):
    pass


def load(path: Path) -> Config:
    """Read and check the config; a missing file means all defaults."""
    # Trusted like a plugin file (root's, not writable by others: it can disable a
    # firewall), and read without blocking and bounded (a FIFO or a huge file
    # planted there is refused, not waited on): security.read_trusted.
    try:
        raw = read_trusted(path, "config file")
    except FileNotFoundError:
        return Config()
    except PermissionRefused as e:
        raise ConfigError(e.message, fix=e.fix) from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}",
                          fix=f"make {path} a readable regular file") from None
    import tomllib  # here: a run without a config file does not pay its import

    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}", fix="correct the syntax") from None
    return parse(data, str(path))


def parse(data: dict[str, Any], where: str = "config") -> Config:
    def bad(msg: str, fix: str = "edit the config file") -> ConfigError:
        return ConfigError(f"{where}: {msg}", fix=fix)

    known = {"mode", "default_interfaces", "xdp_mode", "counters", "disable",
             "hook_timeout", "programs", "link"}
    extra = set(data) - known
    if extra:
        raise bad(f"unknown key(s) {sorted(extra)}")
    mode = data.get("mode", "auto")
    if mode not in MODES:
        raise bad(f"mode {mode!r} must be one of {', '.join(MODES)}")
    xdp_mode = data.get("xdp_mode", "native")
    if xdp_mode not in XDP_MODES:
        raise bad(f"xdp_mode {xdp_mode!r} must be one of {', '.join(XDP_MODES)}")
    ifaces = data.get("default_interfaces", [])
    if not isinstance(ifaces, list) or not all(isinstance(i, str) for i in ifaces):
        raise bad("default_interfaces must be a list of strings")
    disable = data.get("disable", [])
    if not isinstance(disable, list) or not all(isinstance(i, str) for i in disable):
        raise bad("disable must be a list of plugin names")
    timeout = data.get("hook_timeout", 10)
    lo, hi = HOOK_TIMEOUT_RANGE
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not math.isfinite(timeout) or not lo < timeout <= hi:
        raise bad(f"hook_timeout = {timeout!r} is out of range: it must be a finite number "
                  f"of seconds, more than {lo:g} and at most {hi:g}",
                  fix=f"set hook_timeout = {Config.hook_timeout:g} (the default) in {where}")
    counters = data.get("counters", True)
    if not isinstance(counters, bool):
        raise bad("counters must be true or false")
    def link_of(table: dict[str, Any], what: str) -> Link | None:
        value = table.get("link")
        if value is None:
            return None
        try:
            return Link(value)
        except ValueError:
            raise bad(f"{what}link {value!r} must be one of "
                      f"{', '.join(k.value for k in Link)}") from None

    link = link_of(data, "")
    programs: dict[str, ProgramOverride] = {}
    for name, table in (data.get("programs") or {}).items():
        if not isinstance(table, dict):
            raise bad(f"[programs.{name}] must be a table")
        extra = set(table) - {"priority", "policy", "interfaces", "enabled", "link",
                               "verify"}
        if extra:
            raise bad(f"[programs.{name}] unknown key(s) {sorted(extra)}")
        prio = table.get("priority")
        if prio is not None and (isinstance(prio, bool) or not isinstance(prio, int)
                                 or not PRIORITY_MIN <= prio <= PRIORITY_MAX):
            raise bad(f"[programs.{name}] priority {prio!r} out of range "
                      f"{PRIORITY_MIN}-{PRIORITY_MAX}")
        policy = None
        if "policy" in table:
            try:
                pol = table["policy"]
                policy = (VerdictPolicy.parse(pol) if isinstance(pol, str)
                          else VerdictPolicy.from_mapping(pol))
            except ValueError as e:
                raise bad(f"[programs.{name}] {e}") from None
        ifs = table.get("interfaces")
        if ifs is not None and (not isinstance(ifs, list)
                                or not all(isinstance(i, str) for i in ifs)):
            raise bad(f"[programs.{name}] interfaces must be a list of strings")
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise bad(f"[programs.{name}] enabled must be true or false")
        verify = table.get("verify", True)
        if not isinstance(verify, bool):
            raise bad(f"[programs.{name}] verify must be true or false")
        programs[name] = ProgramOverride(prio, policy, tuple(ifs) if ifs is not None else None,
                                         enabled, link_of(table, f"[programs.{name}] "), verify)
    return Config(mode, tuple(ifaces), xdp_mode, counters, frozenset(disable),
                  float(timeout), programs, link)
