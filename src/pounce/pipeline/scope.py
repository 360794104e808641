"""Building ASGI connection scopes from what a protocol parsed.

Shared by every protocol so ``path`` decoding, ``root_path``, proxy headers, lifespan ``state``
and the advertised extensions are the same whichever protocol carried the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from pounce.asgi.types import ASGI_VERSION, HTTP_SPEC_VERSION
from pounce.features.proxy_headers import apply_trusted_proxy_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pounce.asgi.types import Headers
    from pounce.pipeline.connection import ConnectionInfo
    from pounce.pipeline.context import WorkerContext


def http_scope(  # noqa: PLR0917 - positional on purpose: called once per request
    ctx: WorkerContext,
    connection: ConnectionInfo,
    http_version: str,
    method: str,
    raw_path: bytes,
    query_string: bytes,
    headers: Headers,
    extensions: dict[str, Mapping[str, object]],
) -> dict[str, Any]:
    """The ``http`` scope of one request.

    *extensions* are the ones the request's channel can honour (no trailers or early hints
    on HTTP/1.0, say); the connection's ``tls`` extension is added here.
    """
    # Percent-decoded as UTF-8; invalid sequences become U+FFFD, never an error.
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    if ctx.root_path:
        path = ctx.root_path + path
        raw_path = ctx.root_path_bytes + raw_path
    tls = connection.tls
    if tls is not None:
        extensions["tls"] = dict(tls)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": ASGI_VERSION, "spec_version": HTTP_SPEC_VERSION},
        "http_version": http_version,
        "server": connection.server,
        "client": connection.client,
        "scheme": connection.scheme,
        "method": method,
        "root_path": ctx.root_path,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "headers": headers,
        "state": ctx.state.copy(),
        "extensions": extensions,
    }
    proxy_trust = connection.proxy_trust
    if proxy_trust is not None:
        apply_trusted_proxy_headers(scope, proxy_trust)
    return scope
