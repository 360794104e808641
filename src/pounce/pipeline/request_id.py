"""``--request-id``: one id per request, shared by the app, the response and the access log.

Two small pieces, because the id is decided before the app runs and shown after it answers:

* an admission hook (:class:`RequestIds`) that never refuses: it picks the id and puts it in
  the scope as the ``pounce.request_id`` extension (``{"id": "..."}``), where the app, its
  logging and its outgoing calls can find it;
* a response filter (:func:`request_id_filter`) that adds it to the response head, so the
  client sees it and the access log can print it with ``%({x-request-id}o)s``.

A trusted proxy's id is kept (the one a load balancer put in its own log), so a request can
be followed across both; anyone else's is ignored, as a client could otherwise choose the id
another request is logged under. An id that is too long or not visible ASCII is replaced:
it ends up in log lines and response heads.

Generated ids are a random per-worker prefix and a counter, 32 hex digits like a UUID without
dashes: unique across workers, processes and restarts, and about ten times cheaper than
``uuid4()``, which reads the system's random source for every request.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pounce.asgi.types import Headers, Scope
    from pounce.pipeline.connection import ConnectionInfo
    from pounce.pipeline.filters import FilterFactory

__all__ = [
    "EXTENSION",
    "MAX_ID_LENGTH",
    "RequestIdHeader",
    "RequestIds",
    "is_acceptable_id",
    "request_id_filter",
]

#: The scope extension carrying the id: ``scope["extensions"]["pounce.request_id"]["id"]``.
EXTENSION = "pounce.request_id"

#: Longer ids from a proxy are replaced: they go into every log line of the request.
MAX_ID_LENGTH = 200

#: Visible ASCII (``!`` to ``~``): no spaces, controls or anything a log parser trips on.
_VISIBLE = bytes(range(0x21, 0x7F))


def is_acceptable_id(value: bytes) -> bool:
    """Whether a proxy's id may be kept: 1 to 200 visible ASCII characters."""
    return 0 < len(value) <= MAX_ID_LENGTH and not value.translate(None, _VISIBLE)


class RequestIds:
    """The admission hook: picks each request's id and puts it in the scope.

    One per worker, used only from its loop's thread, so the counter needs no lock.
    """

    __slots__ = ("_count", "_header", "_prefix")

    def __init__(self, header: str) -> None:
        self._header = header.encode("ascii")
        # 64 random bits per worker: two workers (or two runs) never share a prefix in practice.
        self._prefix = os.urandom(8).hex()
        self._count = 0

    def new_id(self) -> str:
        self._count += 1
        return f"{self._prefix}{self._count:016x}"

    def admit(self, scope: Scope, connection: ConnectionInfo) -> None:
        # Typed None (never a Rejection), which also keeps admission.py out of its imports.
        request_id: str | None = None
        if connection.proxy_trust is not None:
            header = self._header
            for name, value in scope["headers"]:
                if name == header:
                    if is_acceptable_id(value):
                        request_id = value.decode("ascii")
                    break
        if request_id is None:
            request_id = self.new_id()
        scope["extensions"][EXTENSION] = {"id": request_id}


class RequestIdHeader:
    """The response filter: the request's id as a response field, unless the app set one."""

    __slots__ = ("_header", "_scope")

    #: Only adds a head field: run by the cycle itself, the body goes out untouched.
    changes_body = False

    def __init__(self, scope: Scope, header: bytes) -> None:
        # The id is read when the response starts: the filter is made before admission
        # chose it.
        self._scope = scope
        self._header = header

    def start(
        self, status: int, fields: list[tuple[bytes, bytes]], content_length: int | None
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        header = self._header
        for name, _ in fields:
            if name == header:
                return fields, content_length  # the app's own wins
        # Read now, and checked again: the app may have changed the extension, and what goes
        # into a response head must never split it.
        try:
            value = self._scope["extensions"][EXTENSION]["id"].encode("ascii")
        except (KeyError, TypeError, AttributeError, UnicodeEncodeError):
            return fields, content_length
        if type(value) is bytes and is_acceptable_id(value):
            fields.append((header, value))
        return fields, content_length

    def body(self, data: bytes, more_body: bool) -> bytes:
        return data

    def trailers(self, headers: Headers) -> Headers:
        return headers


def request_id_filter(header: str) -> FilterFactory:
    """A filter factory for :class:`~pounce.pipeline.dispatcher.Dispatcher` (HTTP only)."""
    name = header.encode("ascii")

    def factory(scope: Scope) -> RequestIdHeader:
        return RequestIdHeader(scope, name)

    return factory
