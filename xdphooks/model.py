"""The data model: what plugins declare and what the planner produces.

Everything here is a frozen dataclass with no side effects, so plans can be
compared, hashed and printed.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping, TypeAlias

from .errors import fix_suffix
from .text import LINE_LIMIT, one_line, quoted

#: a backend's name: ``mode =`` in the config, a chain's and a state record's mode.
#: Which names exist is the backends' registry (xdphooks/backends/__init__.py: its
#: ``Mode`` is their typed sum), the one place that parses them; the model carries them.
Mode: TypeAlias = str
#: what reconcile does to one interface
Action = Literal["attach", "replace", "detach", "keep"]
#: an error refuses the change it concerns, a warning does not
Severity = Literal["error", "warning"]

#: XDP return codes in kernel order (enum xdp_action).
ACTIONS: tuple[str, ...] = ("aborted", "drop", "pass", "tx", "redirect")
#: Policy keys: the five actions plus any other return value.
POLICY_KEYS: tuple[str, ...] = ACTIONS + ("unknown",)

NAME_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
CONST_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
#: a value for a ``const volatile`` global: integers and bools by the variable's
#: type, str/bytes for char arrays
ConstantValue = "int | bool | str | bytes"


def constants_json(constants) -> dict:
    """``XdpProgram.constants`` for state, status and fingerprints (bytes as hex)."""
    return {k: (f"hex:{v.hex()}" if isinstance(v, bytes) else v) for k, v in constants}


def map_settings_json(settings) -> dict:
    """``XdpProgram.maps`` (frozen) for state, status and fingerprints."""
    return {name: dict(items) for name, items in settings}


PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 0, 1000, 50


class Link(str, enum.Enum):
    """How the static backend places a program in the root program."""

    SPLICE = "splice"  #: its entry is inlined: no call, no return (the default)
    CALL = "call"  #: its entry is called as a function

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.value


from .abi import DECISION_CODES, Decision  # noqa: E402,F401 - re-exported: the model's words


@dataclass(frozen=True)
class VerdictPolicy:
    """One decision per XDP action, plus one for unknown return values.

    The default is libxdp's: ``pass`` continues, everything else ends the chain.
    Build one from a mapping with :meth:`from_mapping` (keys are action names,
    ``pass`` included) or from a string with :meth:`parse`
    (``"pass=continue,tx=log"``); unnamed actions keep their default.
    """

    aborted: Decision = Decision.RETURN
    drop: Decision = Decision.RETURN
    pass_: Decision = Decision.CONTINUE
    tx: Decision = Decision.RETURN
    redirect: Decision = Decision.RETURN
    unknown: Decision = Decision.RETURN

    def __post_init__(self) -> None:
        for key in POLICY_KEYS:
            value = getattr(self, _attr(key))
            if not isinstance(value, Decision):
                try:
                    object.__setattr__(self, _attr(key), Decision(value))
                except ValueError:
                    raise ValueError(
                        f"bad policy value {value!r} for {key!r}: "
                        f"use one of continue, return, log"
                    ) from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> "VerdictPolicy":
        if not isinstance(data, Mapping):
            raise ValueError(f"policy must be a table of action = decision, not {data!r}")
        unknown_keys = set(data) - set(POLICY_KEYS)
        if unknown_keys:
            raise ValueError(
                f"unknown action(s) {sorted(unknown_keys)} in policy: "
                f"use {', '.join(POLICY_KEYS)}"
            )
        return cls(**{_attr(k): v for k, v in data.items()})  # type: ignore[arg-type]

    @classmethod
    def parse(cls, text: str) -> "VerdictPolicy":
        items = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"bad policy item {part!r}: write ACTION=DECISION")
            items[key.strip()] = value.strip()
        return cls.from_mapping(items)

    @classmethod
    def from_chain_call_actions(cls, actions: Iterable[str]) -> "VerdictPolicy":
        """libxdp semantics: the named actions continue, all others return."""
        chosen = set(actions)
        return cls(**{_attr(k): (Decision.CONTINUE if k in chosen else Decision.RETURN)
                      for k in ACTIONS})

    def decision(self, key: str) -> Decision:
        return getattr(self, _attr(key))

    def as_dict(self) -> dict[str, str]:
        return {k: self.decision(k).value for k in POLICY_KEYS}

    def codes(self) -> list[int]:
        """Decision codes in POLICY_KEYS order, as the rootlet config wants them."""
        return [DECISION_CODES[self.decision(k)] for k in POLICY_KEYS]

    def short(self) -> str:
        """Only what differs from the default, e.g. ``tx=log``; ``default`` if nothing."""
        default = VerdictPolicy()
        diff = [f"{k}={self.decision(k).value}" for k in POLICY_KEYS
                if self.decision(k) is not default.decision(k)]
        return ",".join(diff) or "default"


def _attr(key: str) -> str:
    return "pass_" if key == "pass" else key


@dataclass(frozen=True)
class XdpProgram:
    """One XDP program a plugin contributes to the chains.

    :param name: unique across all plugins; ``[a-z0-9_-]``, at most 32 characters.
    :param object: compiled BPF object; absolute, or relative to
        ``<root>/usr/lib/xdphooks/bpf/``.
    :param program: function name in the object; default: its only XDP program.
    :param priority: 0–1000, lower runs first. ``None``: the object's
        ``.xdp_run_config`` priority, else 50.
    :param policy: what to do with each verdict. ``None``: the object's
        ``.xdp_run_config`` chain-call actions, else :class:`VerdictPolicy` ().
    :param interfaces: interface names or fnmatch globs; ``NETNS/IFNAME`` for an
        interface in a named network namespace. ``None``: ``default_interfaces``
        from the config.
    :param required: if it cannot load, the whole change is refused; an optional
        program is left out with a warning.
    :param pin_maps: maps that persist across relinks; ``None`` means all.
    :param link: static backend only: ``Link.SPLICE`` inlines the entry into the root
        program (no call per packet), ``Link.CALL`` calls it. ``None``: the config's
        ``link``, else splice. A program that cannot be spliced is called (``plan`` and
        ``status`` say why).
    :param constants: values for the object's ``const volatile`` globals (its
        load-time configuration, read-only to the program), by variable name:
        ``{"drop_port": 9, "strict": True}``. Checked against the object's BTF (an
        unknown name, or a value that does not fit the variable's type, is an error
        naming the plugin) and set before load, in both backends.
    :param maps: what a libbpf loader sets on the object's maps before load, by map
        name: ``{"rx_cnt": {"max_entries": 256}, "stats": {"pin": False}}``. Keys:
        ``max_entries`` (1 to 2**32-1), ``map_flags`` (the BPF_F_* bits to load the map
        with) and ``pin`` (``False``: the map is not pinned, a fresh one each relink;
        the same as leaving it out of ``pin_maps``). Checked against the object (an
        unknown map or key, a value out of range, a change a pinned map cannot take)
        with an error naming the plugin, and applied in both backends
        (xdphooks/mapsettings.py).
    :param pin_aliases: where the program's own userspace expects its maps, by map
        name: ``{"flow_table": "/sys/fs/bpf/suricata/flow_table"}``. Each pinned map
        is pinned there too (absolute paths on a bpffs), kept across relinks, removed
        when the program leaves every chain, refused when something else is pinned
        there (xdphooks/pinalias.py).
    :param pin_root: libbpf's ``LIBBPF_PIN_BY_NAME`` layout: every pinned map is also
        pinned at ``<pin_root>/<map name>`` (libbpf's default root is ``/sys/fs/bpf``).
    """

    name: str
    object: str
    program: str | None = None
    priority: int | None = None
    policy: VerdictPolicy | None = None
    interfaces: tuple[str, ...] | None = None
    required: bool = True
    pin_maps: tuple[str, ...] | None = None
    link: Link | None = None
    constants: Mapping[str, ConstantValue] | None = None
    maps: Mapping[str, Mapping[str, int | bool]] | None = None
    pin_aliases: Mapping[str, str] | None = None
    pin_root: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.link, str) and not isinstance(self.link, Link):
            try:
                object.__setattr__(self, "link", Link(self.link))
            except ValueError:
                pass  # reported by program_problems
        problems = program_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        # Lists are accepted for convenience; stored as tuples to stay hashable.
        if isinstance(self.interfaces, list):
            object.__setattr__(self, "interfaces", tuple(self.interfaces))
        if isinstance(self.pin_maps, list):
            object.__setattr__(self, "pin_maps", tuple(self.pin_maps))
        if self.constants is not None:  # frozen and hashable, in a stable order
            object.__setattr__(self, "constants", tuple(sorted(dict(self.constants).items())))
        if self.maps is not None and not isinstance(self.maps, tuple):
            from .mapsettings import freeze

            object.__setattr__(self, "maps", freeze(self.maps))
        if self.pin_aliases is not None and not isinstance(self.pin_aliases, tuple):
            object.__setattr__(self, "pin_aliases", tuple(sorted(dict(self.pin_aliases).items())))


def program_problems(p: XdpProgram) -> list[str]:
    """Everything wrong with one declaration, as sentences (empty if fine)."""
    out: list[str] = []
    if not isinstance(p.name, str) or not NAME_RE.match(p.name):
        out.append(f"name {p.name!r} must match [a-z0-9_-]{{1,32}}")
    if not isinstance(p.object, str) or not p.object:
        out.append(f"object {p.object!r} must be a non-empty path")
    if p.program is not None and (not isinstance(p.program, str) or not p.program):
        out.append(f"program {p.program!r} must be a function name")
    if p.priority is not None and (
        isinstance(p.priority, bool) or not isinstance(p.priority, int)
        or not PRIORITY_MIN <= p.priority <= PRIORITY_MAX
    ):
        out.append(f"priority {p.priority!r} out of range {PRIORITY_MIN}-{PRIORITY_MAX}")
    if p.policy is not None and not isinstance(p.policy, VerdictPolicy):
        out.append(f"policy must be a VerdictPolicy, not {type(p.policy).__name__}")
    if p.interfaces is not None and (
        isinstance(p.interfaces, str)
        or not all(isinstance(i, str) and i for i in p.interfaces)
    ):
        out.append(f"interfaces {p.interfaces!r} must be a list of names or globs")
    if not isinstance(p.required, bool):
        out.append(f"required {p.required!r} must be true or false")
    if p.pin_maps is not None and (
        isinstance(p.pin_maps, str) or not all(isinstance(m, str) for m in p.pin_maps)
    ):
        out.append(f"pin_maps {p.pin_maps!r} must be a list of map names")
    if p.constants is not None:
        items = p.constants if isinstance(p.constants, tuple) else (
            p.constants.items() if isinstance(p.constants, Mapping) else None)
        if items is None:
            out.append(f"constants must map variable names to values, not "
                       f"{type(p.constants).__name__}")
        else:
            for k, v in items:
                if not isinstance(k, str) or not CONST_NAME_RE.match(k):
                    out.append(f"constants: {k!r} is not a C variable name")
                elif not isinstance(v, (bool, int, str, bytes)):
                    out.append(f"constants: {k} = {v!r} must be an int, bool, str or bytes")
    if p.maps is not None:
        from .mapsettings import declaration_problems

        out += declaration_problems(p.maps)
    if p.link is not None and not isinstance(p.link, Link):
        out.append(f"link {p.link!r} must be one of {', '.join(k.value for k in Link)}")
    if p.pin_aliases is not None or p.pin_root is not None:
        from .pinalias import declaration_problems as alias_problems

        out += alias_problems(p.pin_aliases, p.pin_root)
    return out


@dataclass(frozen=True, order=True)
class InterfaceRef:
    """An interface, optionally inside a named network namespace (``ip netns``)."""

    netns: str  # "" for the namespace xdphooks runs in
    name: str

    @classmethod
    def parse(cls, text: str) -> "InterfaceRef":
        ns, sep, name = text.rpartition("/")
        return cls(ns if sep else "", name)

    def __str__(self) -> str:
        return f"{self.netns}/{self.name}" if self.netns else self.name

    @property
    def key(self) -> str:
        """Filesystem-safe key for pin directories and state: ``<ns>@<name>``.

        ``ip netns add`` accepts any name without '/' (with '@', '%', spaces,
        newlines, 250 bytes), so each part is percent-encoded beyond a readable
        set (ordinary keys such as ``-@eth0`` and ``blue@veth0`` read as before);
        a namespace name that would make the key longer than a file name may be
        is cut and suffixed with ``~<hash>`` (:meth:`from_key` finds it again
        among the namespaces that exist)."""
        ns = _key_part(self.netns) if self.netns else "-"
        if len(ns) > _KEY_NS_MAX:
            digest = hashlib.sha256(self.netns.encode("utf-8", "surrogateescape")).hexdigest()
            ns = f"{ns[:_KEY_NS_MAX - 17]}~{digest[:16]}"
        return f"{ns}@{_key_part(self.name)}"

    @classmethod
    def from_key(cls, key: str, namespaces: Iterable[str] = ()) -> "InterfaceRef | None":
        """The interface a key names; None if it is no key, or names (by hash) a
        namespace not among ``namespaces``."""
        ns, sep, name = key.partition("@")  # '@' is always encoded inside the parts
        if not sep or not ns or not name:
            return None
        try:
            ifname = _key_unpart(name)
        except ValueError:
            return None
        if ns == "-":
            return cls("", ifname) if cls("", ifname).key == key else None
        if "~" in ns:
            return next((cls(n, ifname) for n in namespaces if cls(n, ifname).key == key), None)
        try:
            ref = cls(_key_unpart(ns), ifname)
        except ValueError:
            return None
        return ref if ref.key == key else None  # one spelling per interface


#: kept as they are in keys; everything else (first of all '@', '%', '~', '/', and
#: '.', which the bpffs refuses in names: EPERM, so a VLAN eth0.100 needs it too)
#: is percent-encoded, byte by byte
_KEY_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=,:")
#: a key is a file name (NAME_MAX 255 bytes): the interface part is at most 15 bytes,
#: 45 encoded; the namespace part gets what is left, with room to spare
_KEY_NS_MAX = 200


def _key_part(text: str) -> str:
    if text == "-":
        return "%2D"  # '-' alone stands for "the run's own namespace"
    return "".join(ch if ch in _KEY_SAFE else
                   "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
                   for ch in text)


def _key_unpart(part: str) -> str:
    if "~" in part or any(ch not in _KEY_SAFE and ch != "%" for ch in part):
        raise ValueError(part)
    raw = bytearray()
    i = 0
    while i < len(part):
        if part[i] == "%":
            raw.append(int(part[i + 1:i + 3], 16))  # ValueError on a torn escape
            if len(part[i + 1:i + 3]) != 2:
                raise ValueError(part)
            i += 3
        else:
            raw += part[i].encode()
            i += 1
    return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class ChainEntry:
    """A program placed in a chain, with every default resolved."""

    name: str
    plugin: str
    object: str  # absolute path
    program: str | None
    priority: int
    policy: VerdictPolicy
    required: bool = True
    pin_maps: tuple[str, ...] | None = None
    digest: str = ""  # sha256 of the object file, so an upgrade is a change
    link: Link = Link.SPLICE
    constants: tuple[tuple[str, ConstantValue], ...] = ()  # const volatile values, by name
    #: several programs of one object share its maps: those of the first by name
    #: (its pin directory); "" for a program alone with its object
    maps_of: str = ""
    #: XdpProgram.maps frozen: ((map, ((key, value), ...)), ...) (mapsettings.freeze)
    map_settings: tuple = ()
    #: XdpProgram.pin_aliases as ((map, path), ...) and pin_root ("" if none)
    pin_aliases: tuple[tuple[str, str], ...] = ()
    pin_root: str = ""

    def sort_key(self) -> tuple[int, str]:
        return (self.priority, self.name)

    def identity(self) -> dict:
        return {"name": self.name, "object": self.object, "program": self.program,
                "priority": self.priority, "policy": self.policy.as_dict(),
                "pin_maps": list(self.pin_maps) if self.pin_maps is not None else None,
                "digest": self.digest, "link": self.link.value,
                **({"constants": constants_json(self.constants)} if self.constants else {}),
                **({"maps_of": self.maps_of} if self.maps_of else {}),
                **({"maps": map_settings_json(self.map_settings)}
                   if self.map_settings else {}),
                **({"pin_aliases": dict(self.pin_aliases)} if self.pin_aliases else {}),
                **({"pin_root": self.pin_root} if self.pin_root else {})}


@dataclass(frozen=True)
class Chain:
    """The ordered programs for one interface."""

    interface: InterfaceRef
    entries: tuple[ChainEntry, ...]
    mode: Mode = ""  # the backend's name; the planner always sets one (backends.choose)

    def fingerprint(self) -> str:
        blob = json.dumps({"mode": self.mode, "entries": [e.identity() for e in self.entries]},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)


@dataclass(frozen=True)
class Choice:
    """The mode for this run's chains, why, and which modes a plugin may pick instead
    (backends.choose makes it; planner.assess applies plugins' answers within it)."""

    mode: Mode
    why: str
    usable: frozenset[Mode]


@dataclass(frozen=True)
class Problem:
    """A planning finding: an error refuses the change, a warning does not."""

    severity: Severity
    plugin: str | None
    message: str
    fix: str = ""
    interface: InterfaceRef | None = None  # set: concerns this interface only (a veto)

    def __str__(self) -> str:
        # as XdphooksError.line(): plugin text (veto()/warn() messages, names) escaped
        who = f"plugin {quoted(self.plugin)}: " if self.plugin else ""
        return f"{self.severity}: {who}{one_line(self.message, LINE_LIMIT)}{fix_suffix(self.fix)}"


@dataclass(frozen=True)
class Refusal:
    """Why the change on one interface is held back (the running chain stays)."""

    why: str

    def __str__(self) -> str:
        return self.why


@dataclass(frozen=True)
class Change:
    """What reconcile will do to one interface."""

    interface: InterfaceRef
    action: Action
    desired: Chain | None
    running_names: tuple[str, ...] = ()
    reason: str = ""
    refusal: Refusal | None = None  # set: action is "keep" because the change was refused

    @property
    def refused(self) -> bool:
        return self.refusal is not None


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    problems: tuple[Problem, ...] = field(default=())

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def pending(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action != "keep")
