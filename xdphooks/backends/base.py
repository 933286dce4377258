"""What the coordinator hands a backend, and what it gets back."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

from ..errors import ObjectError
from ..model import Chain, ChainEntry, InterfaceRef
from ..paths import Paths
from ..security import read_trusted


@dataclass
class PreviousChain:
    """The chain currently attached, as far as the backend may reuse it."""

    gen_dir: Path  # its pin directory (root, counters, prog-*/link-* pins)
    digests: dict[str, str]  # program name -> object digest it was built from
    slots: dict[str, int] = field(default_factory=dict)  # program name -> its slot there
    mode: str = ""  # the backend that built it (globals carry over within one backend)
    constants: dict[str, dict] = field(default_factory=dict)  # program -> its constants
    map_settings: dict[str, dict] = field(default_factory=dict)  # program -> its maps=

    def same_load(self, entry: ChainEntry) -> bool:
        """Would ``entry`` load as the program it ran as (same object, same constants,
        same map settings)?"""
        from ..model import constants_json, map_settings_json

        return (bool(entry.digest) and self.digests.get(entry.name) == entry.digest
                and self.constants.get(entry.name, {}) == constants_json(entry.constants)
                and self.map_settings.get(entry.name, {})
                == map_settings_json(entry.map_settings))


@dataclass
class BuildContext:
    interface: InterfaceRef
    chain: Chain  # entries in run order, every value resolved
    paths: Paths
    workdir: Path  # private (0700) scratch directory, removed by the coordinator
    data_dir: Path  # prebuilt objects shipped with xdphooks (rootlet, dispatcher)
    counters: bool = True
    previous: PreviousChain | None = None
    #: the xdphooks_prog_arrays hook: (program, {function: prog fd}, {map: fd})
    prog_arrays: Callable[[str, dict, dict], None] | None = None
    #: programs whose pinned maps were another plugin's and were reset (pinowner.claim):
    #: nothing of the previous chain's (globals, a reused extension) is carried to them
    reset_maps: set[str] = field(default_factory=set)
    pin_warnings: list[str] = field(default_factory=list)  # pinowner.claim's, said after attach
    #: a watched build (xdphooks/watch.py, static): a splice.Instrument for the root
    instrument: object | None = None
    #: a watched build shares the running chain's maps instead of creating its own:
    #: root maps by name (counters, events), and per segment {".data"/".bss": fd}
    share_maps: dict[str, int] = field(default_factory=dict)
    share_globals: list[dict[str, int]] | None = None

    def trusted_object(self, entry: ChainEntry) -> str:
        """A private copy of ``entry``'s object holding exactly the bytes that were
        checked and digested at planning time; backends load this, never the
        original path, so nothing can be swapped in between check and load."""
        data = read_trusted(Path(entry.object), "BPF object", entry.plugin)
        if hashlib.sha256(data).hexdigest() != entry.digest:
            raise ObjectError(f"{entry.name}: {entry.object} changed while the chain was "
                              "being built", plugin=entry.plugin,
                              fix="run 'xdphooks reconcile' again once the package "
                                  "transaction that is writing it has finished")
        copy = self.workdir / "objects" / entry.name / os.path.basename(entry.object)
        copy.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        copy.write_bytes(data)
        return str(copy)

    def map_pin_dir(self, entry: ChainEntry) -> Path:
        """Where ``entry``'s maps are pinned (shared by the programs of one object)."""
        d = self.paths.map_pin_dir(entry.maps_of or entry.name)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d


@dataclass
class BuiltChain:
    """A loaded chain, not yet attached. Owns its fds until ``close()``.

    ``pins`` maps a file name inside the generation directory to an fd that
    the coordinator pins there before the swap (at least ``"root"``; the
    static and freplace backends add ``"counters"``, ``"events"``, and for
    freplace ``"prog-<name>"``/``"link-<name>"``).
    """

    mode: str
    prog_fd: int  # the program to attach
    slot_prog_ids: list[int]  # per entry: its own kernel program id (static: the root's)
    maps: dict[str, dict[str, str]]  # program -> map name -> pinned path
    pins: dict[str, int] = field(default_factory=dict)
    closers: list = field(default_factory=list)  # callables run by close()
    #: per entry {"link": "spliced"|"called"|"freplace", "reason": why not spliced}
    slot_links: list[dict[str, str]] = field(default_factory=list)
    #: entries (name, plugin) not built for multi-buffer: the chain is loaded without
    #: BPF_F_XDP_HAS_FRAGS when any is, and cannot attach where the MTU needs frags
    single_buffer: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said once the chain is attached

    def close(self) -> None:
        for fn in reversed(self.closers):
            try:
                fn()
            except Exception:  # noqa: BLE001 - best effort release
                pass
        self.closers.clear()


def close_fd(fd: int):
    return lambda: os.close(fd)


def apply_constants(obj, elf_path: str, entry: ChainEntry, prefix: str = "") -> None:
    """Set ``entry.constants`` in the ``.rodata`` of the opened, not yet loaded
    ``obj`` (read from ``elf_path``); the static backend passes the slot's prefix."""
    if not entry.constants:
        return
    from ..link import constants, elf as E
    from ..link.btf import Btf

    name = os.path.basename(entry.object)
    elf = E.read_elf(elf_path)
    btf_sec, ro_sec = elf.section(".BTF"), elf.section(constants.RODATA)
    rodata = [m for m in obj.maps() if m.internal and m.name.endswith(constants.RODATA)]
    if btf_sec is None or ro_sec is None or not rodata:
        raise ObjectError(f"{entry.name}: {name} has no const volatile variables, so "
                          "constants cannot be set", plugin=entry.plugin,
                          fix="remove constants from the declaration, or declare the "
                              "variables (const volatile ...) and rebuild with clang -g")
    btf = Btf.parse(btf_sec.data, name, entry.plugin)
    symbols = {s.name: (s.value, s.size) for s in elf.symbols if s.shndx == ro_sec.index}
    rodata[0].set_initial_value(constants.apply(
        btf, symbols, rodata[0].initial_value(), entry.constants, prefix=prefix,
        who=entry.name, plugin=entry.plugin, obj=name))


# --- global data (.data/.bss) carried across builds: link/globals.py ---------------------


def running_globals(prog_fd: int) -> dict:
    """Every .data/.bss variable of a loaded program's internal maps, with its bytes."""
    from ..kernel import libbpf
    from ..link.btf import Btf
    from ..link.globals import base_section, kernel_vars

    out: dict = {}
    for mid in libbpf.prog_info(prog_fd, map_ids=True)[1]:
        with libbpf.fd_closing(libbpf.map_fd_by_id(mid)) as fd:
            info = libbpf.map_info(fd)
            if base_section(info.name.decode(errors="replace")) is None \
                    or not info.btf_id or not info.btf_value_type_id:
                continue
            value = libbpf.map_lookup(fd, bytes(4), info.value_size) or b""
            btf = Btf.parse(libbpf.btf_raw_by_id(info.btf_id), "running program")
            out.update(kernel_vars(btf, info.btf_value_type_id, value))
    return out


def object_globals(elf_path: str) -> tuple[dict, dict[str, bytes]]:
    """(variables of .data/.bss by name, each section's default bytes) of an object."""
    from ..link import elf as E
    from ..link.btf import Btf
    from ..link.globals import DATA_SECTIONS, elf_vars

    elf = E.read_elf(elf_path)
    btf_sec = elf.section(".BTF")
    variables, defaults = {}, {}
    for name in DATA_SECTIONS:
        sec = elf.section(name)
        if sec is None or btf_sec is None:
            continue
        size = sec.__dict__.get("nobits_size", 0) if sec.type == E.SHT_NOBITS else len(sec.data)
        defaults[name] = bytes(size) if sec.type == E.SHT_NOBITS else bytes(sec.data)
        symbols = {s.name: (s.value, s.size) for s in elf.symbols if s.shndx == sec.index}
        variables.update(elf_vars(Btf.parse(btf_sec.data, elf_path), name, symbols))
    return variables, defaults


def write_globals(maps: dict[str, int], contents: dict[str, bytes]) -> None:
    """Write each section's contents into its internal map (fd by section name)."""
    from ..kernel import libbpf

    for sec, data in contents.items():
        if sec in maps and data:
            libbpf.map_update(maps[sec], bytes(4), data)


def data_maps(obj) -> dict[str, int]:
    """{".data"/".bss": fd} of an opened and loaded object's internal maps."""
    from ..link.globals import DATA_SECTIONS

    out = {}
    for m in obj.maps():
        for sec in DATA_SECTIONS:
            if m.internal and m.name.endswith(sec):
                out[sec] = m.fd
    return out


def layout_warning(program: str, changed: list[str]) -> str:
    return (f"{program}: the layout of its global data changed ({', '.join(changed[:6])}"
            f"{' …' if len(changed) > 6 else ''}): these start from the new object's "
            "defaults, the other globals kept their values")


def pin_map(m, path: str | None) -> None:
    """Point an opened map at its pin (None: not pinned). The kernel sets
    BPF_F_RDONLY_PROG on every DEVMAP/DEVMAP_HASH it creates, so the pin shows flags
    the object never declared, and libbpf 1.1 compares flags exactly before reusing a
    pin: declare what the pin has when that is the only difference."""
    from ..errors import KernelError
    from ..kernel import libbpf

    m.set_pin_path(path)
    if path is None or m.type not in (libbpf.BPF_MAP_TYPE_DEVMAP,
                                      libbpf.BPF_MAP_TYPE_DEVMAP_HASH) \
            or not os.path.exists(path):
        return
    try:
        with libbpf.fd_closing(libbpf.obj_get(path)) as fd:
            pinned = libbpf.map_info(fd).map_flags
    except KernelError:
        return  # libbpf's own reuse check says what is wrong
    if pinned & ~m.map_flags == libbpf.BPF_F_RDONLY_PROG:
        m.set_map_flags(pinned)


def set_frags(prog, frags: bool) -> None:
    """A program joined to a chain (an extension of its dispatcher, a tail-call target
    of its root) carries the chain's multi-buffer flag: the kernel wants them equal,
    and frags-aware code also runs where packets are single-buffer."""
    from .. import abi
    from ..kernel.features import has_frags

    # A kernel before 5.18 refuses the flag outright: the chain loads single-buffer there
    # and a jumbo MTU is refused at attach, naming the kernel (coordinator).
    frags = frags and has_frags()
    flags = prog.flags & ~abi.BPF_F_XDP_HAS_FRAGS
    prog.set_flags(flags | (abi.BPF_F_XDP_HAS_FRAGS if frags else 0))


def tail_call_targets(ctx: BuildContext, path: str, entry: ChainEntry, program: str,
                      has_prog_array: bool) -> tuple[str, ...]:
    """What to load beside ``entry``: the programs its PROG_ARRAYs initialise, and when
    a plugin fills arrays itself (xdphooks_prog_arrays), all other XDP programs."""
    from ..link import elf as E
    from ..link.rewrite import tail_targets, xdp_programs

    elf = E.read_elf(path)
    targets = tail_targets(elf)
    if has_prog_array and ctx.prog_arrays is not None:
        targets += tuple(p.name for p in xdp_programs(elf)
                         if p.name != program and p.name not in targets)
    return targets


def load_tail_targets(path: str, entry: ChainEntry, targets: tuple[str, ...],
                      map_fds: dict[str, int], frags: bool,
                      hook: Callable[[str, dict, dict], None] | None = None) -> None:
    """Load the programs ``entry``'s object tail-calls through declaratively initialised
    PROG_ARRAYs, from the original object at ``path``, as plain XDP programs with the
    chain's multi-buffer flag; its maps are pointed at the chain's copies (``map_fds``,
    by the object's map names), so libbpf fills the chain's arrays and the targets share
    the entry's maps. The arrays hold the programs once the object is closed."""
    from .. import mapsettings
    from ..errors import KernelError, VerifierError
    from ..kernel import libbpf

    obj = libbpf.BpfObject(path)
    try:
        for p in obj.programs():
            p.set_autoload(p.name in targets)
            if p.name in targets:
                if p.type != libbpf.BPF_PROG_TYPE_XDP:
                    p.set_type(libbpf.BPF_PROG_TYPE_XDP)
                set_frags(p, frags)
        apply_constants(obj, path, entry)
        mapsettings.apply({m.name: m for m in obj.maps() if not m.internal}, entry,
                          os.path.basename(entry.object))
        arrays = {}  # by the object's own names: reuse_fd renames a map after its fd's
        for m in obj.maps():
            # a map reused from a pin carries the kernel's name, cut to 15 characters
            fd = None if m.internal else map_fds.get(m.name, map_fds.get(m.name[:15]))
            if fd is not None:
                if m.type == libbpf.BPF_MAP_TYPE_PROG_ARRAY:
                    arrays[m.name] = m
                m.set_pin_path(None)
                m.reuse_fd(fd)
        obj.load()
        if hook is not None:
            arrays = {name: m.fd for name, m in arrays.items()}
            if arrays:
                hook(entry.name, {p.name: p.fd for p in obj.programs() if p.name in targets},
                     arrays)
    except KernelError as e:
        tail = "\n".join((e.log or "").strip().splitlines()[-6:])
        raise VerifierError(f"{entry.name}: the programs it tail-calls ({', '.join(targets)}) "
                            f"did not load: {e.message}", errno=e.errno, log=e.log,
                            plugin=entry.plugin, detail=tail,
                            fix="fix those programs, or leave the object out") from None
    finally:
        obj.close()
