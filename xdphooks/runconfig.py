"""libxdp run-config metadata (``.xdp_run_config``) and XDP program listing.

Pure Python, stdlib only: the core calls these on the reconcile path.

libxdp objects declare, next to each XDP program ``func``::

    struct {
        __uint(priority, 10);
        __uint(XDP_PASS, 1);
        __uint(XDP_DROP, 1);
    } XDP_RUN_CONFIG(func);          /* variable _func in SEC(".xdp_run_config") */

``__uint(name, val)`` is ``int (*name)[val]``: the value is the nr_elems of
the array the member points to, as with libbpf map definitions. As in libxdp,
chain-call actions start from the default {XDP_PASS}; each ``XDP_*`` member
sets (non-zero) or clears (zero) its action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ObjectError

if TYPE_CHECKING:
    from .link import elf as E
    from .link.btf import Btf

SECTION = ".xdp_run_config"
ACTIONS = ("aborted", "drop", "pass", "tx", "redirect")


@dataclass(frozen=True)
class RunConfig:
    priority: int | None
    chain_call_actions: tuple[str, ...] | None  # lowercase action names, kernel order


def list_xdp_programs(path: str, plugin: str | None = None,
                      elf: E.Elf | None = None) -> list[str]:
    """Function names of the SEC("xdp"...) programs in ``path`` (file order); ``elf``:
    the object already parsed (inspect parses each object once, from its checked bytes)."""
    from .link import elf as E
    from .link.rewrite import xdp_programs
    return [p.name for p in xdp_programs(elf or E.read_elf(str(path), plugin=plugin))]


def read_run_config(path: str, program: str, plugin: str | None = None,
                    elf: E.Elf | None = None, btf: Btf | None = None) -> RunConfig | None:
    """The run config libxdp would read for ``program``, or None if the object has none;
    ``elf`` and ``btf``: the object and its .BTF already parsed.

    Errors (ObjectError) name ``plugin``."""
    from .link import elf as E
    from .link.btf import KIND_ARRAY, KIND_PTR, KIND_STRUCT, KIND_VAR, Btf

    if btf is None:
        elf = elf or E.read_elf(str(path), plugin=plugin)
        btf_sec = elf.section(".BTF")
        if btf_sec is None:
            return None
        btf = Btf.parse(btf_sec.data, str(path), plugin)
    ds = btf.datasec(SECTION)
    if ds is None:
        return None
    want = "_" + program
    try:
        for tid, _off, _size in ds.members():
            var = btf.types[tid]
            if var.kind != KIND_VAR or var.name != want:
                continue
            st = btf.resolve(var.size_type)
            if st.kind != KIND_STRUCT:
                raise ValueError(f"{E.shown(want)} is not a struct")
            priority, actions = None, {"pass"}
            explicit = False
            for name_off, mtype, _moff in st.members():
                mname = btf.string(name_off)
                mt = btf.resolve(mtype)
                if mt.kind != KIND_PTR:
                    raise ValueError(f"member {E.shown(mname)} is not a __uint() value")
                arr = btf.resolve(mt.size_type)
                if arr.kind != KIND_ARRAY:
                    raise ValueError(f"member {E.shown(mname)} is not a __uint() value")
                value = arr.array()[2]
                if mname == "priority":
                    priority = value
                elif mname.startswith("XDP_"):
                    act = mname[4:].lower()
                    if act not in ACTIONS:
                        raise ValueError(f"unknown action {E.shown(mname)}")
                    explicit = True
                    if value:
                        actions.add(act)
                    else:
                        actions.discard(act)
                # other members are ignored, as libxdp does
            return RunConfig(priority,
                             tuple(a for a in ACTIONS if a in actions) if explicit else None)
    except (IndexError, ValueError) as e:
        raise ObjectError(f"object {path}: bad {SECTION} metadata for {E.shown(program)} ({e})",
                          plugin=plugin, fix="fix the XDP_RUN_CONFIG declaration or set "
                                             "priority/policy in the plugin") from None
    return None
