"""Errors raised by the sans-IO HTTP/1.1 parsers.

A :class:`ProtocolError` means the peer sent something we refuse to interpret. The connection
layer answers with :attr:`ProtocolError.status` and closes the connection: after a framing error
we can no longer tell where the next request would start, so continuing would open the door to
request smuggling.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "safe_repr"]


def safe_repr(data: bytes, limit: int = 40) -> str:
    """Render at most *limit* client bytes as printable ASCII.

    Reasons end up in logs; a raw client byte string could carry terminal escapes or forged log
    lines, so everything outside printable ASCII is shown as ``\\xNN`` and the text is truncated.
    """
    shown = data[:limit]
    out = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in shown)
    return out + ("..." if len(data) > limit else "")


class ProtocolError(Exception):
    """The request cannot be accepted; answer with ``status`` and close the connection.

    ``reason`` is short and log-safe: parsers only ever put constant text or
    :func:`safe_repr`-escaped bytes in it.
    """

    status: int
    reason: str

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"ProtocolError({self.status!r}, {self.reason!r})"
