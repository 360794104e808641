"""Neutralising network-supplied text before it reaches a log.

Request paths, query strings and header values are chosen by whoever is on
the other end of the socket.  Written verbatim into a log they can forge
whole log lines (CR/LF, U+2028/U+2029 which some viewers treat as line
breaks), drive the operator's terminal (ANSI/OSC escape sequences, C1
controls), hide text (bidi overrides, zero-width characters) or crash the
log handler outright (lone surrogates cannot be encoded as UTF-8).

:func:`escape_for_log` turns every such character into a visible, ASCII-only
escape (``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``) and backslash-escapes the
double quote and the backslash itself.  Escaping the backslash is what makes
the quoting sound: without it a value ending in ``\\`` would turn the closing
quote of ``"%(a)s"`` into an escaped one, and a literal ``\\x1b`` typed by the
client would be indistinguishable from a real, escaped ESC.

The common case -- plain printable text -- is detected with a single C-level
scan and returned unchanged, so the escaping costs almost nothing per request.
"""

from __future__ import annotations

__all__ = ["escape_for_log"]

# Characters that are printable but still need escaping because they have a
# meaning inside the access line itself.
_QUOTE_ESCAPES = {'"': '\\"', "\\": "\\\\"}


def _escape_char(char: str) -> str:
    """Return the visible escape for one character that must not be logged raw."""
    replacement = _QUOTE_ESCAPES.get(char)
    if replacement is not None:
        return replacement
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        # A lone low surrogate in this range is how ``surrogateescape`` spells an
        # undecodable byte; show the original byte rather than the surrogate.
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_for_log(value: str | bytes) -> str:
    """Return ``value`` made safe to embed in a single, quoted log line.

    Bytes are decoded as UTF-8 (what clients overwhelmingly send); bytes that
    are not valid UTF-8 come out as ``\\xNN`` so nothing is silently lost.

    Everything :meth:`str.isprintable` rejects is escaped: C0 controls
    (including CR, LF, TAB and NUL), DEL, C1 controls, U+2028/U+2029, format
    characters such as bidi overrides, surrogates and unassigned code points.
    Printable non-ASCII text (``é``, ``日本``) is kept as is so logs stay
    readable.  ``"`` and ``\\`` are backslash-escaped.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    # Fast path: three C-level scans, no allocation, for the overwhelmingly
    # common case of clean text.
    if value.isprintable() and '"' not in value and "\\" not in value:
        return value
    return "".join(
        char if char.isprintable() and char not in _QUOTE_ESCAPES else _escape_char(char)
        for char in value
    )
