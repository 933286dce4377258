# dnf 4 plugin: after a transaction that touched xdphooks plugins, show what
# the rpm file triggers did to the XDP chains. It only reports: the work is
# done by the xdphooks package's %transfiletriggerin/%transfiletriggerpostun,
# which also run under rpm, dnf5, PackageKit and image builders.

import os
import subprocess

import dnf

XDPHOOKS = "/usr/bin/xdphooks"
PREFIXES = ("/usr/lib/xdphooks/plugins/", "/usr/lib/xdphooks/bpf/")


def _touches_plugins(pkg):
    if pkg.name == "xdphooks" or pkg.name.startswith("xdphooks-"):
        return True
    try:
        return any(f.startswith(PREFIXES) for f in pkg.files)
    except Exception:  # filelists may be missing (dnf5 / Fedora >= 40 repos)
        return False


class Xdphooks(dnf.Plugin):
    """Report XDP chain changes after a transaction."""

    name = "xdphooks"

    def transaction(self):
        trans = self.base.transaction
        if not trans or not os.access(XDPHOOKS, os.X_OK):
            return  # nothing done, or xdphooks itself was just removed
        if self.base.conf.installroot not in ("", "/"):
            return  # offline install: the boot unit applies it
        changed = [p for p in list(trans.install_set) + list(trans.remove_set)
                   if _touches_plugins(p)]
        if not changed:
            return
        proc = subprocess.run([XDPHOOKS, "status", "--brief"], check=False,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=60)
        if proc.returncode == 2:  # an older CLI without --brief
            proc = subprocess.run([XDPHOOKS, "status"], check=False,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  universal_newlines=True, timeout=60)
        print("xdphooks: XDP chains after this transaction:")
        for line in proc.stdout.rstrip().splitlines():
            print("  " + line)
