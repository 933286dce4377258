"""Errors that reach the admin as one line: what went wrong, for whom, how to fix it."""

from __future__ import annotations

from typing import Any

from .text import LINE_LIMIT, lines, one_line, quoted


#: what separates a problem from its fix, in every one-line problem
FIX = " — fix: "


def fix_suffix(fix: str) -> str:
    """The one format of a fix: ``" — fix: FIX"``, escaped to one line (fixes may
    hold plugin text), or "" when there is none."""
    return f"{FIX}{one_line(fix)}" if fix else ""


class XdphooksError(Exception):
    """Base: ``str(err)`` is the one-line message shown to the admin."""

    exit_code = 1

    def __init__(self, message: str, *, plugin: str | None = None, fix: str = "",
                 detail: str = "") -> None:
        self.message = message
        self.plugin = plugin
        self.fix = fix
        # e.g. the verifier's last lines; shown under the message, each line escaped
        self.detail = lines(detail)
        super().__init__(self.line())

    def line(self) -> str:
        """The one line: message, plugin and fix may hold plugin text (exception
        messages, names, paths), so each is escaped here (text.one_line)."""
        who = f"plugin {quoted(self.plugin)}: " if self.plugin else ""
        return f"{who}{one_line(self.message, LINE_LIMIT)}{fix_suffix(self.fix)}"


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

    def __init__(self, message: str, *, errno: int = 0, log: str = "", **kw: Any) -> None:
        self.errno = errno
        self.log = log
        super().__init__(message, **kw)


class VerifierError(KernelError):
    pass


class LimitError(XdphooksError):
    """A stated limit (programs, maps, stack) would be exceeded."""
