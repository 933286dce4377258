#!/bin/bash
# Run xdphooks' VM test suite (pytest -m vm) under a real Debian kernel with
# virtme-ng, because the host kernel may refuse freplace (BPF_PROG_TYPE_EXT).
#
#   tests/vm/run-in-vm.sh KERNEL [-- PYTEST_ARGS...]
#   tests/vm/run-in-vm.sh KERNEL --cmd 'SHELL COMMAND'   (e.g. the benchmark)
#
# KERNEL: 6.1 (package linux-image-amd64, bookworm) | 6.12 (linux-image-6.12-amd64)
#         | 5.10 (bullseye's) | sid (sid's current kernel, 7.x) | a path to a vmlinuz.
# 5.10 and sid are unpacked into a cache by scripts/fetch-vm-kernels.sh (never installed
# on the host); their modules are shown to the guest at /lib/modules (vng --rodir).
# Installs the kernel, qemu, busybox-static and virtme-ng when missing (needs
# root). Exit status: pytest's (or the command's); 90 when the VM could not be
# started or did not report back -- never a silent skip.
#
# A VM that dies mid-suite (seen: vng exit 255 after 1005 s) is booted once more for
# the tests that had not reported (tests/vm/vm_results.py records each test as it
# finishes); that is said loudly, and a test that failed before the death still fails.
#
# Environment: XDPHOOKS_VM_TIMEOUT (seconds, default 2400), XDPHOOKS_VM_MEMORY
# (default 2G), XDPHOOKS_VM_CPUS (default 2), PYTHON (default repo .venv),
# XDPHOOKS_VM_RESULTS_OUT (a file: every test's outcome and the guest's capabilities
# as JSON, the input of scripts/kernel-table.py).
set -uo pipefail
# the run's wall time, recorded in its results (tests/vm/vm_results.py provenance())
export XDPHOOKS_VM_STARTED=$(date +%s)

die() { echo "run-in-vm: FATAL: $*" >&2; exit 90; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)
TIMEOUT=${XDPHOOKS_VM_TIMEOUT:-2400}
MEMORY=${XDPHOOKS_VM_MEMORY:-2G}
CPUS=${XDPHOOKS_VM_CPUS:-2}

[ $# -ge 1 ] || die "usage: $0 KERNEL [-- PYTEST_ARGS...] | KERNEL --cmd 'COMMAND'"
FLAVOUR=$1; shift
MODE=pytest; CMD=""
if [ "${1:-}" = "--cmd" ]; then MODE=cmd; CMD=${2:?--cmd needs a command}; shift 2
elif [ "${1:-}" = "--" ]; then shift; fi
PYTEST_ARGS=("$@")

apt_install() {
    [ "$(id -u)" = 0 ] || die "need root to install $* (apt-get)"
    echo "run-in-vm: installing $*" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 "$@" >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
             -o DPkg::Lock::Timeout=600 "$@" >&2; } || die "apt-get install $* failed"
}

find_kernel() {  # $1: version prefix -> newest matching /boot/vmlinuz-*
    ls -1 /boot/vmlinuz-"$1"[.-]* 2>/dev/null | sort -V | tail -1
}

case "$FLAVOUR" in
    6.1|amd64|linux-image-amd64) PREFIX=6.1; PKG=linux-image-amd64 ;;
    6.12|linux-image-6.12-amd64) PREFIX=6.12; PKG=linux-image-6.12-amd64 ;;
    5.10|bullseye) PREFIX=""; PKG=""; SUITE=bullseye ;;
    sid|7|7.*) PREFIX=""; PKG=""; SUITE=sid ;;
    /*) PREFIX=""; PKG="" ;;
    *) die "unknown kernel flavour '$FLAVOUR' (use 5.10, 6.1, 6.12, sid or a vmlinuz path)" ;;
esac
KCACHE=${XDPHOOKS_KERNEL_CACHE:-/var/cache/xdphooks-test/kernels}
if [ -n "${SUITE:-}" ]; then
    [ -e "$KCACHE/$SUITE/vmlinuz" ] || bash "$REPO/scripts/fetch-vm-kernels.sh" "$SUITE" >&2 \
        || die "could not fetch $SUITE's kernel (scripts/fetch-vm-kernels.sh $SUITE)"
    KERNEL=$(readlink -f "$KCACHE/$SUITE/vmlinuz")
elif [ -n "$PREFIX" ]; then
    KERNEL=$(find_kernel "$PREFIX")
    if [ -z "$KERNEL" ]; then apt_install "$PKG"; KERNEL=$(find_kernel "$PREFIX"); fi
else
    KERNEL=$FLAVOUR
fi
[ -n "$KERNEL" ] && [ -r "$KERNEL" ] || die "no readable kernel image for '$FLAVOUR'"
# A kernel unpacked outside /boot brings its modules beside it (virtme-ng finds them for
# the initramfs the same way): the guest mounts them at /lib/modules/<release>.
KMODS=""
case "$KERNEL" in
    /boot/*) ;;
    *) d=$(dirname "$KERNEL"); while [ "$d" != / ] && [ ! -d "$d/lib/modules" ]; do d=$(dirname "$d"); done
       [ -d "$d/lib/modules" ] && KMODS=$(readlink -f "$d/lib/modules") ;;
esac

command -v qemu-system-x86_64 >/dev/null || apt_install qemu-system-x86
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q static \
    || dpkg -s busybox-static >/dev/null 2>&1 || apt_install busybox-static
VNG=$(dirname "$PYTHON")/vng
if [ ! -x "$VNG" ]; then
    VNG=$(command -v vng || true)
fi
if [ -z "$VNG" ]; then
    echo "run-in-vm: installing virtme-ng" >&2
    "$PYTHON" -m pip install -q virtme-ng >&2 || die "pip install virtme-ng failed"
    VNG=$(dirname "$PYTHON")/vng
fi
[ -x "$VNG" ] || die "vng not found"
# vng runs virtme-run from PATH
export PATH="$(dirname "$VNG"):$PATH"

# Build on the host what the guest would otherwise compile slowly under emulation.
( make -s -C "$REPO/bpf" >&2 ) || die "building the dispatcher failed"
( cd "$REPO" && "$PYTHON" - >&2 <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from conftest import build_test_object
for src in sorted(Path("tests/bpf").glob("*.bpf.c")):
    try:
        build_test_object(src.name[: -len(".bpf.c")])
    except Exception as e:  # a broken test object fails its own test, not the VM
        print(f"run-in-vm: could not prebuild {src}: {e}", file=sys.stderr)
EOF
) || die "prebuilding test objects failed"
# ... and the third-party corpus (tests/test_corpus.py): clang under emulation is slow.
( cd "$REPO" && "$PYTHON" -c 'import sys; sys.path[:0] = ["tests", "."]; import corpus_support as c; c.prebuild()' >&2 ) \
    || echo "run-in-vm: could not prebuild the corpus; its tests will say why" >&2

TOP=$(mktemp -d /tmp/xdphooks-vm.XXXXXX) || die "mktemp failed"
trap 'rm -rf "$TOP"' EXIT

write_guest() {  # $1: out dir shared with the guest; $2...: extra pytest args
    local out=$1; shift
    {
        echo '#!/bin/bash'
        echo "set -u"
        echo "echo started > $out/started"
        echo "cd $(printf %q "$REPO")"
        echo 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || { echo "guest: cannot mount bpffs"; echo 91 > '"$out"'/rc; exit 91; }'
        if [ -n "$KMODS" ]; then
            echo "[ -e /lib/modules/\$(uname -r)/modules.dep ] || echo 'guest: no modules for this kernel at /lib/modules'"
        fi
        echo 'ip netns add xhvmcheck && ip netns del xhvmcheck || { echo "guest: ip netns does not work"; echo 92 > '"$out"'/rc; exit 92; }'
        # conntrack's kfuncs (bpf_xdp_ct_lookup, the corpus's synproxy) are in the module's
        # BTF, there only once it is loaded, as on the host (where the firewall loads it)
        echo 'modprobe nf_conntrack 2>/dev/null || echo "guest: no nf_conntrack module"'
        echo 'export XDPHOOKS_IN_VM=1 XDPHOOKS_REQUIRE_KERNEL=1 PYTHONDONTWRITEBYTECODE=1'
        echo "export XDPHOOKS_VM_RESULTS=$out PYTHONPATH=$(printf %q "$REPO/tests/vm")\${PYTHONPATH:+:\$PYTHONPATH}"
        echo 'echo "guest: kernel $(uname -r), $(nproc) cpus"'
        # the kernel's capabilities, as xdphooks doctor probes them, for docs/kernels.md
        printf '%q -m xdphooks doctor --capabilities-json > %q 2>/dev/null || echo "guest: doctor --capabilities-json failed"\n' \
            "$PYTHON" "$out/guest.json"
        if [ "$MODE" = pytest ]; then
            printf '%q -m pytest -p no:cacheprovider -p vm_results -m vm' "$PYTHON"
            printf ' %q' "$@"
            echo
        else
            echo "$CMD"
        fi
        echo "rc=\$?; echo \$rc > $out/rc; exit \$rc"
    } > "$out/guest.sh"
    chmod +x "$out/guest.sh"
}

# Bytecode compiled here, not in the guest: PYTHONDONTWRITEBYTECODE is set for
# the guest (and often for CI), and compiling the package in every CLI run
# under emulation costs about a second each.
"$PYTHON" -m compileall -q -j0 "$REPO/xdphooks" "$REPO/tests" "$REPO/plugins" >/dev/null \
    || echo "run-in-vm: compileall failed; the guest compiles as it goes" >&2
boot() {  # $1: out dir; runs its guest.sh; sets VRC
    local out=$1 start end
    echo "run-in-vm: booting $KERNEL (no KVM: software emulation, be patient)" >&2
    start=$(date +%s)
    # --overlay-rwdir: the guest may write in the repo (build/, caches); the host's copy stays untouched.
    for attempt in 1 2; do
        # a kernel unpacked outside /boot: the host's /lib/modules has none of its modules
        # (veth, sch_*, ...), so the guest gets the kernel's own there
        timeout --kill-after=30 "$TIMEOUT" "$VNG" -r "$KERNEL" --disable-kvm --memory "$MEMORY" \
            --cpus "$CPUS" --overlay-rwdir "$REPO" --rwdir "$out" --cwd "$REPO" \
            ${KMODS:+--rodir "/lib/modules=$KMODS"} -- "$out/guest.sh" </dev/null
        VRC=$?
        end=$(date +%s)
        echo "run-in-vm: VM ($KERNEL) exited $VRC after $((end - start)) s" >&2
        # vng has been seen to exit 255 within seconds, before the guest ran, once in a
        # while: that (and only that) is retried here, and said
        [ -f "$out/started" ] || [ $((end - start)) -gt 120 ] || [ "$attempt" = 2 ] && break
        echo "run-in-vm: the VM did not start (vng exit $VRC); trying once more" >&2
        start=$(date +%s)
    done
    [ -f "$out/started" ] || die "the VM did not start (vng exit $VRC); see the output above"
}

RUN1=$TOP/run1
mkdir -p "$RUN1"
write_guest "$RUN1" "${PYTEST_ARGS[@]}"
boot "$RUN1"
RUNS=("$RUN1")
if [ ! -f "$RUN1/rc" ] && [ "$MODE" = pytest ] && [ -s "$RUN1/collected.txt" ]; then
    mapfile -t LEFT < <("$PYTHON" "$REPO/tests/vm/vm_results.py" remaining "$RUN1")
    total=$(wc -l < "$RUN1/collected.txt")
    if ((${#LEFT[@]})); then
        echo "run-in-vm: !!!!! THE VM DIED MID-SUITE (vng exit $VRC): $((total - ${#LEFT[@]})) of $total tests had reported." >&2
        echo "run-in-vm: !!!!! RE-RUNNING ONCE, IN A NEW VM, ONLY THE ${#LEFT[@]} THAT HAD NOT (first: ${LEFT[0]})." >&2
        echo "run-in-vm: !!!!! Tests that failed before the death still fail the run." >&2
        # the re-run keeps the options (-q, -rs, -m ...) but not the original selection
        OPTS=()
        prev=""
        for a in "${PYTEST_ARGS[@]}"; do
            case "$a" in -*) OPTS+=("$a") ;; *) [ "$prev" = -m ] && OPTS+=("$a") ;; esac
            prev=$a
        done
        RUN2=$TOP/run2
        mkdir -p "$RUN2"
        write_guest "$RUN2" "${OPTS[@]}" "${LEFT[@]}"
        boot "$RUN2"
        RUNS+=("$RUN2")
        [ -f "$RUN2/rc" ] || die "the VM died twice (vng exit $VRC); see the output above"
    fi
fi
LAST=${RUNS[-1]}
[ -f "$LAST/rc" ] || die "the VM started but the guest script did not finish (vng exit $VRC; timeout ${TIMEOUT}s?)"
RC=$(cat "$LAST/rc")
if [ "$MODE" = pytest ]; then
    MERGED=${XDPHOOKS_VM_RESULTS_OUT:-$TOP/results.json}
    "$PYTHON" "$REPO/tests/vm/vm_results.py" merge "$MERGED" "${RUNS[@]}" || { [ "$RC" = 0 ] && RC=1; }
fi
exit "$RC"
