"""Helpers for the freplace (dynamic backend) tests, which run only inside the
virtme-ng VM (tests/vm/run-in-vm.sh sets XDPHOOKS_IN_VM=1): the host kernel
refuses BPF_PROG_TYPE_EXT.

``FrEnv`` plays the coordinator: it builds chains with the freplace backend,
pins each generation like the coordinator does, and reads maps/counters.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import conftest
from xdphooks.backends import freplace
from xdphooks.backends.base import BuildContext, BuiltChain, PreviousChain
from xdphooks.kernel import libbpf
from xdphooks.model import Chain, ChainEntry, InterfaceRef
from xdphooks.paths import Paths

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / "xdphooks" / "data"
IN_VM = os.environ.get("XDPHOOKS_IN_VM") == "1"

#: Module-level marks for VM-only tests: marker ``vm`` plus a loud skip on the host.
vm_only = [
    pytest.mark.vm,
    pytest.mark.skipif(not IN_VM, reason="VM-ONLY TEST SKIPPED ON THE HOST: run it with "
                       "tests/vm/run-in-vm.sh (the host kernel refuses freplace); "
                       "tests/test_vm_harness.py does that"),
]

#: one test for each backend: static on the host, freplace inside the VM
both_modes = pytest.mark.parametrize("mode", [
    pytest.param("static"),
    pytest.param("freplace", marks=vm_only),
])

XDP = {"aborted": 0, "drop": 1, "pass": 2, "tx": 3, "redirect": 4}
PKT_LEN = 160


def packet() -> bytes:
    """A 160-byte frame: byte 0 counts the components that ran, 1.. their tags."""
    return bytes(PKT_LEN)


digest = conftest.digest
#: conftest.entry(), for the fr_* test objects' program
entry = functools.partial(conftest.entry, program="fr_tag")


@dataclass
class Generation:
    built: BuiltChain
    gen_dir: Path
    entries: list[ChainEntry]

    @property
    def root_fd(self) -> int:
        return self.built.prog_fd

    def run(self, data: bytes | None = None, repeat: int = 1) -> libbpf.TestRun:
        return libbpf.prog_test_run(self.built.prog_fd, data if data is not None else packet(),
                                    repeat)

    def order(self, data: bytes | None = None) -> tuple[int, list[int]]:
        """(retval, tags of the components that ran, in order)."""
        res = self.run(data)
        n = res.data_out[0]
        return res.retval, list(res.data_out[1:1 + n])

    def counters(self) -> list[dict]:
        from xdphooks.counters import read_counters
        return read_counters(self.built.pins["counters"], len(self.entries))

    def events(self) -> list[dict]:
        from xdphooks.counters import read_events
        return read_events(self.built.pins["events"])

    @property
    def previous(self) -> PreviousChain:
        return PreviousChain(self.gen_dir, {e.name: e.digest for e in self.entries})


@dataclass
class FrEnv:
    base: Path
    paths: Paths
    gens: list[Generation] = field(default_factory=list)
    _n: int = 0

    def build(self, entries: list[ChainEntry], previous: PreviousChain | None = None,
              counters: bool = True, backend=freplace) -> Generation:
        self._n += 1
        workdir = self.base / f"work{self._n}"
        workdir.mkdir()
        chain = Chain(InterfaceRef("", "frtest0"), tuple(entries), mode=backend.MODE)
        ctx = BuildContext(chain.interface, chain, self.paths, workdir, DATA_DIR, counters,
                           previous)
        built = backend.build(ctx)
        gen_dir = self.paths.gen_pin_dir(chain.interface.key, self._n, chain.fingerprint())
        gen_dir.mkdir(parents=True)
        for name, fd in built.pins.items():
            libbpf.obj_pin(fd, str(gen_dir / name))
        gen = Generation(built, gen_dir, list(entries))
        self.gens.append(gen)
        return gen

    def drop(self, gen: Generation) -> None:
        """What the coordinator does to an old generation after the swap."""
        gen.built.close()
        shutil.rmtree(gen.gen_dir, ignore_errors=True)
        self.gens.remove(gen)

    def map_fd(self, program: str, map_name: str) -> int:
        return libbpf.obj_get(str(self.paths.map_pin_dir(program) / map_name))

    def set_cfg(self, program: str, verdict: int | None = None, tag: int = 0) -> None:
        fd = self.map_fd(program, "fr_cfg")
        try:
            libbpf.map_update(fd, struct.pack("<I", 0),
                              struct.pack("<II", 0 if verdict is None else verdict + 1, tag))
        finally:
            os.close(fd)

    def hits(self, program: str) -> int:
        fd = self.map_fd(program, "fr_hits")
        try:
            return struct.unpack("<Q", libbpf.map_lookup(fd, struct.pack("<I", 0), 8))[0]
        finally:
            os.close(fd)

    def map_id(self, program: str, map_name: str) -> int:
        fd = self.map_fd(program, map_name)
        try:
            return libbpf.map_info(fd).id
        finally:
            os.close(fd)


@contextmanager
def fr_env():
    """A private bpffs and state root for freplace builds, torn down afterwards."""
    if os.geteuid() != 0:
        pytest.fail("freplace VM tests need root")
    base = Path(f"/tmp/xhfr-{uuid.uuid4().hex[:8]}")
    bpffs = base / "bpffs"
    bpffs.mkdir(parents=True)
    subprocess.run(["mount", "-t", "bpf", "bpf", str(bpffs)], check=True)
    env = FrEnv(base, Paths(root=base / "root", bpffs=bpffs))
    try:
        yield env
    finally:
        for g in list(env.gens):
            g.built.close()
        subprocess.run(["umount", "-l", str(bpffs)], check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fr():
    with fr_env() as env:
        yield env
