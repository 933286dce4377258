#!/usr/bin/env python3
"""The xdphooks demo: real packages, a real kernel, real packets, in private namespaces.

Run through scripts/demo.sh (which installs what is needed and builds the packages).
Nothing touches the host's interfaces, /etc/xdphooks or /sys/fs/bpf: the installed
framework is pointed at a private root and bpffs through its environment, which apt,
dpkg and rpm pass to their triggers.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NS_A, NS_B, DEV_A, DEV_B = "xhdemo-a", "xhdemo-b", "demo0", "demo1"
IP_A, IP_B = "198.18.250.1", "198.18.250.2"
BASE = Path("/tmp/xdphooks-demo")
ROOT, BPFFS = BASE / "root", BASE / "bpffs"
PACKAGES = ("xdphooks-firewall", "xdphooks-counter", "xdphooks-txbuggy", "xdphooks")

BOLD, DIM, GREEN, RED, RESET = "\x1b[1m", "\x1b[2m", "\x1b[32m", "\x1b[31m", "\x1b[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = RESET = ""


def step(n: int, text: str) -> None:
    print(f"\n{BOLD}── {n}. {text}{RESET}")


def run(*argv: str, quiet: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """argv only, never a shell string; apt/dpkg chatter hidden unless it fails."""
    proc = subprocess.run(list(argv), env=ENV, text=True, capture_output=True,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        print(f"{RED}{' '.join(argv)} failed ({proc.returncode}){RESET}\n{proc.stdout}{proc.stderr}")
        raise SystemExit(1)
    if not quiet:
        print(proc.stdout, end="")
    return proc


def apt(*args: str) -> float:
    t = time.monotonic()
    run("apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120", *args)
    return time.monotonic() - t


def xdphooks(*args: str) -> subprocess.CompletedProcess:
    return run("/usr/bin/xdphooks", *args, check=False)


def show_status(title: str = "", seconds: float = 0) -> None:
    """status twice, `seconds` apart, so the table shows packet rates."""
    sys.path.insert(0, "/usr/lib/xdphooks/python")
    os.environ.update(ENV)
    from xdphooks import status
    from xdphooks.paths import Paths

    paths = Paths.from_env()
    prev = status.collect(paths) if seconds else None
    if seconds:
        time.sleep(seconds)
    data = status.collect(paths)
    if title:
        print(f"{DIM}{title}{RESET}")
    print(status.render(data, prev, seconds))


def traffic(count: int, rate: float) -> subprocess.Popen:
    """Bounded traffic from the peer namespace to our own veth address only."""
    code = f"""
import socket, time, subprocess
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range({count}):
    s.sendto(b"demo", ("{IP_A}", 9 if i % 10 == 0 else 5353))
    time.sleep({1.0 / rate})
"""
    udp = subprocess.Popen(["ip", "netns", "exec", NS_B, sys.executable, "-c", code])
    subprocess.Popen(["ip", "netns", "exec", NS_B, "ping", "-q", "-c", str(count // 5), "-i",
                      str(5.0 / rate), IP_A], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return udp


def ping_ok() -> bool:
    return subprocess.run(["ip", "netns", "exec", NS_B, "ping", "-c", "2", "-i", "0.2", "-W", "1",
                           IP_A], capture_output=True).returncode == 0


def block(ip: str) -> None:
    key = socket.inet_aton(ip)
    pin = BPFFS / "xdphooks/maps/firewall/blocklist"
    run("bpftool", "map", "update", "pinned", str(pin), "key", *[str(b) for b in key],
        "value", *["0"] * 8)


def setup() -> None:
    teardown(quiet=True)
    for ns in (NS_A, NS_B):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", NS_A, "link", "add", DEV_A, "type", "veth", "peer", "name", DEV_B,
                    "netns", NS_B], check=True)
    for ns, dev, ip in ((NS_A, DEV_A, IP_A), (NS_B, DEV_B, IP_B)):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
    (ROOT / "etc/xdphooks").mkdir(parents=True)
    os.chmod(BASE, 0o755)
    (ROOT / "etc/xdphooks/xdphooks.toml").write_text(
        f'mode = "auto"\ndefault_interfaces = ["{NS_A}/{DEV_A}"]\n')
    BPFFS.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], check=True)


def teardown(quiet: bool = False) -> None:
    installed = [p for p in PACKAGES if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
    ).stdout.startswith("install ok")]
    if installed:
        subprocess.run(["apt-get", "-y", "-q", "purge", *installed], env=ENV,
                       capture_output=True, stdin=subprocess.DEVNULL)
    for ns in (NS_A, NS_B):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["umount", str(BPFFS)], capture_output=True)
    shutil.rmtree(BASE, ignore_errors=True)
    if not quiet:
        print(f"{GREEN}cleaned up: packages removed, namespaces deleted, private bpffs unmounted{RESET}")


DOCTOR_KEEP = ("kernel:", "XDP programs load", "freplace (dynamic linking) works",
               "chains will use", "interface ")


def doctor() -> None:
    """The doctor lines that matter here, shortened, and what the freplace line means."""
    lines = xdphooks("doctor").stdout.splitlines()
    kept = [ln for ln in lines if ln.startswith("[FAIL") or ln[7:].startswith(DOCTOR_KEEP)]
    kept = [re.sub(r" \(libbpf: [^)]*\)", "", ln) for ln in kept]
    kept = [re.sub(r"(chains will use: \w+) \(auto: .*\)$", r"\1 (auto)", ln) for ln in kept]
    print("\n".join(kept or lines))
    freplace = next((ln for ln in kept if "freplace (dynamic linking) works: False" in ln), "")
    if freplace:
        why = ("\"Operation not permitted\": this kernel refuses freplace (dynamic linking)"
               if "not permitted" in freplace else "freplace (dynamic linking) is unavailable here")
        print(f"{DIM}{why},\nso the chains use the static backend, which links the programs "
              f"into one. Expected here, not an error.{RESET}")


def deb(pkgdir: Path, name: str, version: str | None = None) -> str:
    pattern = f"{name}_{version or '*'}_*.deb"
    found = sorted(glob.glob(str(pkgdir.resolve() / pattern)))  # apt wants ./ or absolute
    if not found:
        raise SystemExit(f"no {pattern} in {pkgdir}: run scripts/demo.sh, which builds them")
    return found[-1]


ENV = dict(os.environ, XDPHOOKS_ROOT=str(ROOT), XDPHOOKS_LIBDIR="/usr/lib/xdphooks",
           XDPHOOKS_BPFFS=str(BPFFS), DEBIAN_FRONTEND="noninteractive")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pkgs", default=str(REPO / "build/pkgs"))
    ap.add_argument("--upgrade-pkgs", default=str(REPO / "build/pkgs-upgrade"))
    ap.add_argument("--keep", action="store_true", help="leave everything in place at the end")
    args = ap.parse_args()
    pkgs = Path(args.pkgs)
    if os.path.exists("/usr/lib/xdphooks") and not os.environ.get("XDPHOOKS_DEMO_FORCE"):
        print("xdphooks is already installed on this machine; the demo installs and removes its "
              "own packages, so it stops here (set XDPHOOKS_DEMO_FORCE=1 to go on anyway).")
        return 1
    try:
        step(1, f"Two network namespaces joined by a veth: {NS_B}/{DEV_B} ({IP_B}) → "
                f"{NS_A}/{DEV_A} ({IP_A}); chains go on {NS_A}/{DEV_A}")
        setup()
        print(f"ping {IP_B} → {IP_A}: {'ok' if ping_ok() else 'FAILED'}")

        step(2, "apt-get install ./xdphooks_*.deb ./xdphooks-firewall_*.deb  (one transaction)")
        t = apt("install", deb(pkgs, "xdphooks"), deb(pkgs, "xdphooks-firewall", "1.0"))
        print(f"installed in {t:.1f} s; the dpkg trigger ran xdphooks reconcile")
        show_status()

        step(3, "Add the packet counter and the buggy TX program (one apt transaction → one relink)")
        apt("install", deb(pkgs, "xdphooks-counter"), deb(pkgs, "xdphooks-txbuggy"))
        udp = traffic(count=300, rate=60)
        show_status("live, while bounded traffic flows from the peer namespace:", seconds=2)

        step(4, f"Block {IP_B} in the firewall's pinned blocklist (bpftool map update pinned …)")
        block(IP_B)
        print(f"ping {IP_B} → {IP_A}: {'ok' if ping_ok() else 'dropped by firewall'}")

        step(5, "Upgrade the firewall to 1.1: one swap, its blocklist survives")
        apt("install", deb(Path(args.upgrade_pkgs), "xdphooks-firewall", "1.1"))
        print(f"ping after upgrade: {'ok (blocklist LOST!)' if ping_ok() else 'still dropped: blocklist intact'}")
        udp.wait()
        show_status()

        step(6, "What the buggy program did: its TX verdicts were logged and the chain went on")
        out = xdphooks("events").stdout.splitlines()
        print("\n".join(out[:5]) + (f"\n… {len(out) - 5} more" if len(out) > 5 else ""))
        print(f"\n{DIM}tracing one UDP packet {IP_B}:4000 → {IP_A}:9 through the chain, "
              f"program by program ({IP_B} is blocked):{RESET}")
        print(xdphooks("trace", f"{NS_A}/{DEV_A}", "--udp", f"{IP_B}:4000->{IP_A}:9").stdout,
              end="")

        step(7, "apt-get remove xdphooks-txbuggy: relinked without it")
        apt("remove", "xdphooks-txbuggy")
        show_status()

        step(8, "xdphooks doctor: what this kernel offers, and which mode the chains use")
        doctor()
    finally:
        if not args.keep:
            step(9, "Clean up")
            teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
