"""Errors that reach the admin as one line: what went wrong, for whom, how to fix it."""

from __future__ import annotations


class XdphooksError(Exception):
    """Base: ``str(err)`` is the one-line message shown to the admin."""

    exit_code = 1

    def __init__(self, message: str, *, plugin: str | None = None, fix: str = "",
                 detail: str = "") -> None:
        self.message = message
        self.plugin = plugin
        self.fix = fix
        self.detail = detail  # e.g. the verifier's last lines; shown under the message
        super().__init__(self.line())

    def line(self) -> str:
        who = f"plugin {self.plugin!r}: " if self.plugin else ""
        fix = f" — fix: {self.fix}" if self.fix else ""
        return f"{who}{self.message}{fix}"


class UsageError(XdphooksError):
    exit_code = 2


class PermissionRefused(XdphooksError):
    """Not root, or a path that is not safe to trust."""


class LockError(XdphooksError):
    pass


class StateError(XdphooksError):
    pass


class ObjectError(XdphooksError):
    """A BPF object that cannot be used: missing, corrupt, untrusted, unlinkable."""


class KernelError(XdphooksError):
    """A kernel or libbpf call failed; ``errno`` and libbpf's log are kept."""

    def __init__(self, message: str, *, errno: int = 0, log: str = "", **kw) -> None:
        self.errno = errno
        self.log = log
        super().__init__(message, **kw)


class VerifierError(KernelError):
    pass


class LimitError(XdphooksError):
    """A stated limit (programs, maps, stack) would be exceeded."""
