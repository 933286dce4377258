"""What an errno from loading, attaching, linking or pinning means, as a sentence.

One table, used by every failing kernel/libbpf call (``libbpf._fail``): the
operation (:data:`LOAD`, :data:`ATTACH`, :data:`LINK`, :data:`PIN`, or
:data:`ANY`) picks the sentence, because the same errno means different things
(EEXIST from an attach is "someone else's program is there"; from a pin, "a
file is in the way"). The kernel's own extack message, when it gave one
(``kernel/rtnl.py`` keeps it for XDP attach), follows the sentence: it is the
most precise thing there is, the sentence says what to do about it.
"""

from __future__ import annotations

import errno as E
import os
from dataclasses import dataclass

LOAD, ATTACH, LINK, PIN, ANY = "load", "attach", "link", "pin", "any"
ENOTSUPP = 524  # kernel-internal "not supported", leaks to user space from BPF
#: libbpf's own error codes (libbpf.h, enum libbpf_errno)
LIBBPF_ERRNO_BASE = 4000


@dataclass(frozen=True)
class Sentence:
    text: str
    fix: str


S = Sentence

TABLE: dict[int, dict[str, Sentence]] = {
    E.ERANGE: {
        ATTACH: S("the interface's MTU (for a veth: its peer's) is larger than an XDP program "
                  "without multi-buffer support can take",
                  "lower the MTU (ip link set dev DEV mtu 1500), or use programs built for "
                  "multi-buffer (SEC(\"xdp.frags\"))"),
        ANY: S("a value is out of the range the kernel accepts",
               "check sizes and limits of the object's maps and programs"),
    },
    E.EBUSY: {
        ATTACH: S("the interface already runs an XDP program where none was expected (one "
                  "attached meanwhile), or a BPF link holds it (another tool attached it with "
                  "bpf_link, which netlink cannot replace)",
                  "see what runs (ip link show dev DEV; bpftool link show); remove a foreign "
                  "program or link (ip link set dev DEV xdp off; bpftool link detach id N), "
                  "or use reconcile --takeover"),
        LINK: S("the target slot or program is busy (already replaced, or being attached)",
                "run reconcile again; if it persists, teardown IFACE and reconcile"),
        ANY: S("the kernel object is busy", "run the command again"),
    },
    E.EEXIST: {
        ATTACH: S("the program on the interface is not the one expected (it was replaced "
                  "meanwhile), or one runs in the other XDP mode (native vs skb)",
                  "see what runs (ip link show dev DEV), remove a foreign program "
                  "(ip link set dev DEV xdp off) or use reconcile --takeover"),
        PIN: S("a file is already pinned at that path",
               "remove the stale pin (rm PATH; its contents are lost), then reconcile"),
        ANY: S("it already exists", "remove what is in the way, then retry"),
    },
    E.EOPNOTSUPP: {
        ATTACH: S("the interface's driver does not support XDP in this mode",
                  "set xdp_mode = \"skb\" in xdphooks.toml (generic XDP works on every "
                  "interface), or use a driver with native XDP"),
        LINK: S("this kernel cannot attach extension (freplace) programs here",
                "use mode = \"static\" (or \"auto\")"),
        ANY: S("the kernel does not support this operation",
               "use mode = \"static\", or a newer kernel"),
    },
    ENOTSUPP: {
        ANY: S("the kernel does not support a feature the program uses (a helper, kfunc or "
               "map type, or freplace)", "use mode = \"static\", or a newer kernel"),
    },
    E.EINVAL: {
        ATTACH: S("the kernel refused the attach request (invalid flags, a program bound to "
                  "another device, or a program type that cannot attach to an interface)",
                  "read the kernel's reason (after 'the kernel says'); check xdp_mode"),
        LOAD: S("the kernel refused the program as invalid (the verifier, an unknown helper or "
                "section, or a map definition it does not accept)",
                "read the verifier's last lines; rebuild the object for this kernel"),
        LINK: S("the extension does not match the slot it should replace (function "
                "signature, BTF or program type)",
                "build the program as int f(struct xdp_md *) with clang -g"),
        ANY: S("the kernel refused an invalid argument", "report this as an xdphooks bug"),
    },
    E.E2BIG: {
        LOAD: S("the program is too large for the kernel (too many instructions, or too many "
                "maps for one program)",
                "split the chain over interfaces, use mode = \"freplace\", or shrink the program"),
        ATTACH: S("the program needs more room than the interface gives (headroom, MTU or "
                  "queue count)", "lower the MTU, or use xdp_mode = \"skb\""),
        ANY: S("an argument is too large for the kernel", "shrink the object's maps or programs"),
    },
    E.ENOSPC: {
        LOAD: S("the kernel ran out of room for the program or its maps (the verifier's log "
                "buffer, or a map's entries)",
                "shrink the program or its maps; for the log, report it as an xdphooks bug"),
        ANY: S("no space left in a kernel table (ids, map entries or a bpffs)",
               "free some BPF objects (bpftool prog/map show) and retry"),
    },
    E.EPERM: {
        LOAD: S("the kernel does not allow this process to load BPF programs (no CAP_BPF and "
                "CAP_SYS_ADMIN, kernel lockdown, or unprivileged BPF disabled)",
                "run as root with full capabilities, outside a confining container or LSM"),
        LINK: S("the kernel refuses extension (freplace) programs here (lockdown, an LSM, or no "
                "support for BPF trampolines)", "use mode = \"static\" (or \"auto\")"),
        ATTACH: S("the kernel does not allow this process to attach XDP programs "
                  "(CAP_NET_ADMIN missing, or in another user namespace)",
                  "run as root with CAP_NET_ADMIN in the interface's namespace"),
        ANY: S("not permitted", "run as root with full capabilities"),
    },
    E.EACCES: {
        LOAD: S("the verifier found the program unsafe",
                "read the verifier's last lines; fix the program, or leave it out of the chain"),
        ANY: S("access denied", "run as root; check the bpffs mount's permissions"),
    },
    E.ENOMEM: {
        ANY: S("the kernel ran out of memory for BPF (or the locked-memory limit, "
               "RLIMIT_MEMLOCK, on kernels before 5.11, was reached)",
               "raise the limit (ulimit -l unlimited; LimitMEMLOCK=infinity in the unit), "
               "or shrink maps"),
    },
    E.ENODEV: {
        ANY: S("the interface does not exist (any more)",
               "nothing to do; its chain is attached when it returns"),
    },
    E.ENOENT: {
        PIN: S("the pin path does not exist (bpffs remounted, or removed meanwhile)",
               "run reconcile again; it recognises its chains from the kernel"),
        LINK: S("the target program or its BTF function is gone",
                "run reconcile again"),
        ANY: S("a kernel object or pinned path does not exist",
               "run reconcile again; check that the bpffs is mounted"),
    },
    E.EBADF: {
        ANY: S("an object handed to the kernel was not open any more",
               "report this as an xdphooks bug"),
    },
    E.EFAULT: {
        ANY: S("the kernel could not read an argument (a bug in the caller)",
               "report this as an xdphooks bug"),
    },
    E.ENOTDIR: {
        PIN: S("the pin path's parent is not a directory on a bpffs",
               "check --bpffs (normally /sys/fs/bpf) and that a bpffs is mounted there"),
    },
    E.EXDEV: {
        PIN: S("the pin path is not on a bpffs", "mount one: mount -t bpf bpf /sys/fs/bpf"),
    },
    E.ELOOP: {
        LOAD: S("the program has a loop or call chain the verifier cannot bound",
                "bound the loop (or use bpf_loop) and rebuild"),
    },
    E.EAGAIN: {
        ANY: S("the kernel asked to try again (memory pressure, or a verifier log too small)",
               "run reconcile again"),
    },
    E.ETIMEDOUT: {
        ANY: S("the kernel call timed out", "run reconcile again"),
    },
    E.ENXIO: {
        ATTACH: S("the device cannot take this XDP program (offload or hardware mode)",
                  "use xdp_mode = \"native\" or \"skb\""),
    },
    # libbpf's own errors, before anything reaches the kernel
    LIBBPF_ERRNO_BASE + 0: {ANY: S("libbpf could not read the ELF object",
                                   "rebuild the object with clang -target bpf -g")},
    LIBBPF_ERRNO_BASE + 1: {ANY: S("the BPF object is malformed (libbpf: bad format)",
                                   "rebuild the object with clang -target bpf -g")},
    LIBBPF_ERRNO_BASE + 2: {ANY: S("the object's 'version' section is wrong",
                                   "rebuild the object")},
    LIBBPF_ERRNO_BASE + 3: {ANY: S("the object was built for the other byte order",
                                   "rebuild it for this machine (clang -target bpf)")},
    LIBBPF_ERRNO_BASE + 4: {ANY: S("libbpf hit an internal error", "report it with the log")},
    LIBBPF_ERRNO_BASE + 5: {ANY: S("a relocation in the object is invalid",
                                   "rebuild the object with a current clang")},
    LIBBPF_ERRNO_BASE + 6: {ANY: S("the kernel refused to load the program",
                                   "read the verifier's last lines")},
    LIBBPF_ERRNO_BASE + 7: {ANY: S("the verifier rejected the program",
                                   "read the verifier's last lines; fix the program")},
    LIBBPF_ERRNO_BASE + 8: {ANY: S("the program is too large for the kernel",
                                   "shrink it or split the chain")},
    LIBBPF_ERRNO_BASE + 9: {ANY: S("the kernel version the object asks for does not match",
                                   "rebuild the object")},
    LIBBPF_ERRNO_BASE + 10: {ANY: S("the kernel does not support the program's type",
                                    "use a newer kernel")},
}


def errno_name(err: int) -> str:
    if err == ENOTSUPP:
        return "ENOTSUPP"
    if err == E.EOPNOTSUPP:
        return "EOPNOTSUPP"  # errno.errorcode says ENOTSUP, its alias
    if err >= LIBBPF_ERRNO_BASE:
        return f"LIBBPF_ERRNO {err}"
    return E.errorcode.get(err, f"errno {err}")


def explain(op: str, err: int, extack: str = "") -> Sentence:
    """The sentence for ``err`` from an operation of kind ``op``."""
    rows = TABLE.get(err, {})
    s = rows.get(op) or rows.get(ANY)
    if s is None:
        s = Sentence(os.strerror(err) if err < LIBBPF_ERRNO_BASE else "libbpf failed",
                     "see the kernel log (dmesg) and the message above")
    text = f"{s.text} ({errno_name(err)})"
    if extack:
        text += f"; the kernel says: {extack}"
    return Sentence(text, s.fix)
