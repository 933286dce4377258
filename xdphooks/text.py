"""Text from outside xdphooks made safe to print, log or store as one line.

Plugins (and files and the kernel) supply text that xdphooks shows to the
admin: exception messages, plugin and program names, paths, warn()/veto()
messages.  Printed raw, a newline forges a second "xdphooks: error: ..." line
and an ESC/CSI/OSC sequence rewrites the terminal; stored raw in state.json it
is replayed by every later ``status``.  ``one_line`` is the one rule for all of
them: every control or format character (Unicode categories Cc and Cf: \\n \\r
\\t ESC, C1 controls such as \\x9b (CSI), bidi overrides \\u202e, zero-width
characters), line and paragraph separators and unpaired surrogates become a
visible backslash escape, and the result is capped in length.

Its output holds nothing it would escape (a backslash is left as is), so
applying it again as the last guard at an output edge changes nothing:
``one_line(one_line(s)) == one_line(s)``.
"""

from __future__ import annotations

import unicodedata

#: default cap for one piece of outside text (a message, a name, a path): long
#: enough for a verifier summary line or a path, short enough that one problem
#: stays one readable line
LIMIT = 400
#: cap for a whole line at an output edge (xdphooks' own words around the pieces)
LINE_LIMIT = 2000

ELLIPSIS = "…"

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# categories escaped: controls (Cc), format chars incl. bidi overrides and
# zero-width joiners (Cf), line/paragraph separators (Zl, Zp), surrogates
# (Cs, from surrogateescape'd bytes) and unassigned/private-use code points
# (Cn, Co) that a terminal may render as anything
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn", "Co"})


def _escape_char(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def needs_escape(ch: str) -> bool:
    return unicodedata.category(ch) in _ESCAPED_CATEGORIES


def one_line(value: object, limit: int | None = LIMIT) -> str:
    """``value`` as one printable line: escaped, capped at ``limit`` chars.

    Non-str values are converted with ``str()`` first (a failing ``__str__``
    is itself plugin code: its failure is shown, not raised).  ``limit=None``
    escapes without capping (for keys that must stay unique).
    """
    if isinstance(value, bytes):
        text = value.decode("utf-8", "backslashreplace")
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = str(value)
        except Exception as exc:  # noqa: BLE001 - plugin __str__ is untrusted
            text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    if not isinstance(text, str):  # a str subclass is fine; anything else is not
        text = repr(text)
    pieces = [_escape_char(ch) if needs_escape(ch) else ch for ch in text]
    if limit is None or sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    # cap on whole pieces: an escape cut in half ("\\x1") would read as another char
    keep = max(limit - len(ELLIPSIS), 0)
    out, used = [], 0
    for piece in pieces:
        if used + len(piece) > keep:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out) + ELLIPSIS


def is_one_line(value: str) -> bool:
    """True when ``value`` holds nothing ``one_line`` would escape."""
    return not any(needs_escape(ch) for ch in value)


def quoted(value: object, limit: int | None = 200) -> str:
    """A name (plugin, program, file) in quotes, escaped: ``'name'``."""
    return f"'{one_line(value, limit)}'"


def first_line(value: object, limit: int | None = LINE_LIMIT) -> str:
    """The first line of stored text (a recorded failure with its detail under
    it), escaped: what ``status`` replays."""
    text = value if isinstance(value, str) else one_line(value, None)
    return one_line(text.splitlines()[0] if text else "", limit)


def lines(value: object, limit: int | None = LINE_LIMIT) -> str:
    """Text that is several lines by design (a verifier log): each line escaped,
    so a line may not rewrite the terminal or forge a line of another kind."""
    if not value:
        return ""
    text = value if isinstance(value, str) else one_line(value, None)
    return "\n".join(one_line(ln, limit) for ln in text.splitlines())
