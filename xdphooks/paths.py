"""Where everything lives. ``--root``/``XDPHOOKS_ROOT`` prefixes every path;
``XDPHOOKS_LIBDIR`` moves only the package-owned tree (plugins, objects), so
a test can use the real package-installed plugins with a private state root;
``--bpffs``/``XDPHOOKS_BPFFS`` is the pin root."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote
from dataclasses import dataclass
from pathlib import Path

#: one chain generation's pin directory: ``g<N>-<fingerprint>`` (N never reused)
_GEN_RE = re.compile(r"^g(\d+)-([0-9a-f]{16})$")


def gen_dir_name(generation: int, fingerprint: str) -> str:
    return f"g{generation}-{fingerprint}"


def parse_gen_dir(name: str) -> tuple[int, str] | None:
    """(generation, fingerprint) of a generation directory's name; None if it is not one."""
    m = _GEN_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


#: what the kernel accepts as an interface name (dev_valid_name): 1-15 bytes, not "."
#: or "..", no "/", ":" or whitespace
_IFNAME_RE = re.compile(r"^[^/:\s\x00]{1,15}$")
NAME_MAX = 255
#: the directory under the bpffs that holds every xdphooks pin (and nothing else)
PIN_TREE = "xdphooks"
#: the prebuilt BPF objects shipped inside the package (rootlet, dispatchers, probes)
DATA_DIR = Path(__file__).resolve().parent / "data"


def valid_ifname(name: str) -> bool:
    return bool(_IFNAME_RE.match(name)) and name not in (".", "..") \
        and len(name.encode(errors="surrogateescape")) <= 15


def valid_iface_key(key: object) -> bool:
    """The interface-key grammar (``InterfaceRef.key``: ``<netns or ->@<ifname>``): one
    plain path component (it names a pin directory, so no "/", NUL, "." or "..", at most
    NAME_MAX bytes), a namespace part and, after the last "@", an interface name."""
    if not isinstance(key, str) or not key or key in (".", "..") or "/" in key \
            or "\x00" in key or len(key.encode(errors="surrogateescape")) > NAME_MAX:
        return False
    ns, sep, name = key.rpartition("@")
    # the parts are percent-encoded (model.InterfaceRef.key): "enp3s0f1.1000" is
    # "enp3s0f1%2E1000" in a key, 17 characters for a 13-byte name
    return bool(sep and ns) and valid_ifname(unquote(name, errors="surrogateescape"))


@dataclass(frozen=True)
class Paths:
    root: Path = Path("/")
    bpffs: Path = Path("/sys/fs/bpf")
    libdir: Path | None = None

    @classmethod
    def from_env(cls, root: str | None = None, bpffs: str | None = None) -> "Paths":
        root = root or os.environ.get("XDPHOOKS_ROOT") or "/"
        bpffs = bpffs or os.environ.get("XDPHOOKS_BPFFS") or "/sys/fs/bpf"
        libdir = os.environ.get("XDPHOOKS_LIBDIR")
        return cls(Path(root), Path(bpffs), Path(libdir) if libdir else None)

    def _p(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    @property
    def lib(self) -> Path:
        return self.libdir or self._p("usr/lib/xdphooks")

    @property
    def plugin_dir(self) -> Path:  # package-owned drop-ins
        return self.lib / "plugins"

    @property
    def bpf_dir(self) -> Path:  # package-owned BPF objects
        return self.lib / "bpf"

    @property
    def etc(self) -> Path:
        return self._p("etc/xdphooks")

    @property
    def admin_plugin_dir(self) -> Path:
        return self.etc / "plugins"

    @property
    def config_file(self) -> Path:
        return self.etc / "xdphooks.toml"

    @property
    def state_dir(self) -> Path:
        return self._p("var/lib/xdphooks")

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def cache_dir(self) -> Path:  # caches of what the host's package database says
        return self._p("var/cache/xdphooks")

    @property
    def run_dir(self) -> Path:
        return self._p("run/xdphooks")

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "lock"

    @property
    def pin_root(self) -> Path:
        return self.bpffs / PIN_TREE

    def map_pin_dir(self, program: str) -> Path:
        """Persistent maps of one program, shared by all its chains and generations."""
        return self.pin_root / "maps" / program

    def iface_pin_dir(self, iface_key: str) -> Path:
        return self.pin_root / "if" / iface_key

    def gen_pin_dir(self, iface_key: str, generation: int, fingerprint: str) -> Path:
        return self.iface_pin_dir(iface_key) / gen_dir_name(generation, fingerprint)
