"""Recognise our own running chain from the kernel when its pins are gone.

The pins in bpffs are how xdphooks normally knows that the program an interface
runs is its own. They vanish when the bpffs is unmounted and mounted afresh (a
container restart, or a bpffs mounted inside ``ip netns exec``'s private mount
namespace). The kernel still runs the chain and holds all of its objects, so
``state.json`` records, per chain, the kernel ids of everything pinned (root,
counters, events, freplace programs and links, the components' maps) and the
root program's name and tag. From those, :func:`recognise` decides (pure) whether
the attached program is provably the chain we recorded, and :func:`repin` puts
each object back at its pin path from its kernel id, so a firewall's blocklist
and every counter survive and reconcile converges without ``--takeover``.

A program that merely has our name is not ours: the id, the name, the tag and
every recorded map and program id must agree with what the kernel says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import KernelError, XdphooksError

#: a pin's kind, from its place: in a generation directory ``root``/``prog-*`` are
#: programs, ``link-*`` links, the rest maps; everything under ``maps/`` is a map
PROG, LINK, MAP = "prog", "link", "map"


def pin_kind(rel: str) -> str:
    if rel.startswith("maps/"):
        return MAP  # a program's persistent maps, whatever they are called
    base = rel.rsplit("/", 1)[-1]
    if base == "root" or base.startswith("prog-"):
        return PROG
    if base.startswith("link-"):
        return LINK
    return MAP


# --- facts and the decision (pure) ---------------------------------------------------


@dataclass(frozen=True)
class ProgFacts:
    id: int
    name: str
    tag: str
    map_ids: frozenset[int]


@dataclass(frozen=True)
class KernelFacts:
    """What the kernel says about the objects a record names (absent ids missing)."""

    root: ProgFacts | None
    progs: dict[int, ProgFacts] = field(default_factory=dict)
    links: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (prog, target)
    maps: frozenset[int] = frozenset()  # map ids that exist


@dataclass(frozen=True)
class Recognition:
    ours: bool
    why: str = ""  # when not ours: what disagrees
    repin: dict[str, tuple[str, int]] = field(default_factory=dict)  # rel path -> (kind, id)
    gen_rel: str = ""  # the generation directory, relative to the pin root
    #: recorded objects the kernel freed with their last pin (rel paths): a freplace
    #: link lives only as long as its pin, and with it goes the EXT program and its maps
    lost: tuple[str, ...] = ()

    @property
    def rebuild(self) -> bool:
        """A component program or link is gone: the chain runs without it, so it must
        be built again (the maps that went with it cannot be brought back)."""
        return any(pin_kind(rel) in (PROG, LINK) for rel in self.lost)


def recognise(attached: int, root_name: str, root_tag: str, pins: dict[str, int],
              facts: KernelFacts) -> Recognition:
    """Is the attached program the chain a state record describes?

    ``pins`` maps each recorded pin path (relative to the pin root) to the kernel id
    it held; ``root_name``/``root_tag`` are the recorded root program's."""
    root = facts.root
    if root is None or root.id != attached:
        return Recognition(False, f"program id {attached} is gone")
    if root_name and root.name != root_name:
        return Recognition(False, f"program id {attached} is named {root.name!r}, the chain "
                                  f"recorded was {root_name!r} (the id was reused)")
    if root_tag and root.tag != root_tag:
        return Recognition(False, f"program id {attached} has tag {root.tag}, the chain "
                                  f"recorded has {root_tag}")
    roots = [r for r in pins if r.startswith("if/") and r.endswith("/root")]
    if len(roots) != 1 or pins[roots[0]] != attached:
        return Recognition(False, "the state record names no root pin for this program")
    # The root is ours (id, name, tag, root pin). What the kernel freed with its pin
    # is lost, not a reason to disown the chain; what exists must still be the chain's.
    owned = set(root.map_ids)
    repin: dict[str, tuple[str, int]] = {}
    lost: list[str] = []
    for rel, oid in sorted(pins.items()):
        kind = pin_kind(rel)
        if kind == PROG and rel not in roots:
            p = facts.progs.get(oid)
            if p is None:
                lost.append(rel)
                continue
            owned |= p.map_ids
        repin[rel] = (kind, oid)
    for rel, (kind, oid) in list(repin.items()):
        if kind == LINK:
            prog_rel = rel.rsplit("/", 1)[0] + "/prog-" + rel.rsplit("/link-", 1)[1]
            link = facts.links.get(oid)
            if link is None:
                lost.append(rel)
                del repin[rel]
            elif link != (pins.get(prog_rel), attached):
                return Recognition(False, f"link id {oid} no longer joins "
                                          f"{prog_rel.rsplit('/', 1)[-1]} to program {attached}")
        elif kind == MAP and (oid not in facts.maps or oid not in owned):
            if any(pin_kind(r) in (PROG, LINK) for r in lost):
                # its program is gone (freed with its pin): so is the map, or its id
                # cannot be vouched for; either way it is not re-pinned
                lost.append(rel)
                del repin[rel]
                continue
            # every program survived, so every map they use did: a record naming
            # another (or none) was not written for this chain
            return Recognition(False, f"map id {oid} ({rel}) is not one the chain uses")
    return Recognition(True, repin=repin, gen_rel=roots[0].rsplit("/", 1)[0],
                       lost=tuple(sorted(lost)))


# --- the kernel edge ---------------------------------------------------------------------


def _prog_facts(prog_id: int) -> ProgFacts | None:
    from .kernel import libbpf

    try:
        fd = libbpf.prog_fd_by_id(prog_id)
    except KernelError:
        return None
    try:
        info, ids = libbpf.prog_info(fd, map_ids=True)
        return ProgFacts(info.id, info.name.decode(errors="replace"), bytes(info.tag).hex(),
                         frozenset(ids))
    finally:
        os.close(fd)


def kernel_facts(attached: int, pins: dict[str, int]) -> KernelFacts:
    from .kernel import libbpf

    progs, links, maps = {}, {}, set()
    for rel, oid in pins.items():
        kind = pin_kind(rel)
        if kind == PROG and oid != attached:
            if (p := _prog_facts(oid)) is not None:
                progs[oid] = p
        elif kind == LINK:
            try:
                with libbpf.fd_closing(libbpf.link_fd_by_id(oid)) as fd:
                    li = libbpf.link_info(fd)
                links[oid] = (li.prog_id, li.target_obj_id)
            except KernelError:
                pass
        elif kind == MAP:
            try:
                os.close(libbpf.map_fd_by_id(oid))
                maps.add(oid)
            except KernelError:
                pass
    return KernelFacts(_prog_facts(attached), progs, links, frozenset(maps))


def snapshot(pin_root: Path, gen_dir: Path, programs: list[str]) -> tuple[str, str, dict[str, int]]:
    """(root name, root tag, {pin path relative to pin_root: kernel id}) of a pinned
    generation and its programs' persistent maps, for the state record."""
    from .kernel import libbpf

    pins: dict[str, int] = {}
    name = tag = ""
    paths = sorted(gen_dir.iterdir())
    for prog in programs:
        mdir = pin_root / "maps" / prog
        if mdir.is_dir():
            paths += sorted(mdir.iterdir())
    for path in paths:
        rel = str(path.relative_to(pin_root))
        kind = pin_kind(rel)
        if path.name == "root":
            try:
                with libbpf.fd_closing(libbpf.obj_get(str(path))) as fd:
                    info, _ = libbpf.prog_info(fd)
                name, tag = info.name.decode(errors="replace"), bytes(info.tag).hex()
            except KernelError:
                pass
        oid = pinned_id(path, kind)
        if oid:  # else not a pin we can read: nothing to restore from
            pins[rel] = oid
    return name, tag, pins


def observe_lost(pin_root: Path, attached: int, record) -> Recognition | None:
    """For an interface whose attached program no pin names: the recognition of the
    recorded chain, or None when there is no record to recognise it by."""
    if not attached or record is None or record.prog_id != attached \
            or not getattr(record, "pins", None):
        return None
    pins = record.pins
    return recognise(attached, record.root_name, record.root_tag, pins,
                     kernel_facts(attached, pins))


def pinned_id(path: Path, kind: str) -> int:
    """Kernel id of the object pinned at ``path`` (0 if none can be read)."""
    from .kernel import libbpf

    try:
        with libbpf.fd_closing(libbpf.obj_get(str(path))) as fd:
            if kind == PROG:
                return libbpf.prog_info(fd)[0].id
            return libbpf.link_info(fd).id if kind == LINK else libbpf.map_info(fd).id
    except KernelError:
        return 0


def repin(pin_root: Path, rec: Recognition) -> list[str]:
    """Pin every object of a recognised chain again at its recorded path; returns the
    paths pinned (those still present and holding the same id are left alone)."""
    from .kernel import libbpf

    opener = {PROG: libbpf.prog_fd_by_id, LINK: libbpf.link_fd_by_id, MAP: libbpf.map_fd_by_id}
    done = []
    for rel, (kind, oid) in sorted(rec.repin.items()):
        path = pin_root / rel
        if os.path.lexists(path):
            # pinned already: a map shared with another chain recovered first is fine;
            # anything else there (planted, or another tool's) is not ours to use
            if pinned_id(path, kind) != oid:
                raise XdphooksError(f"{path} holds another object than the running chain's "
                                    f"{kind} id {oid} (planted, or pinned by another tool)",
                                    fix=f"remove {path} and run reconcile again")
            continue
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with libbpf.fd_closing(opener[kind](oid)) as fd:
            libbpf.obj_pin(fd, str(path))
        done.append(rel)
    return done


def record_fields(pin_root: Path, gen_dir: Path, chain) -> dict:
    """The recognition fields of a state record (``InterfaceRecord``) for a chain
    just pinned at ``gen_dir``."""
    name, tag, pins = snapshot(pin_root, gen_dir, [e.name for e in chain.entries])
    return {"root_name": name, "root_tag": tag, "pins": pins}
