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
    from pounce.asgi.types import Headers
    from pounce.features.proxy_headers import ProxyTrust
    from pounce.server.context import WorkerContext


def http_scope(  # noqa: PLR0917 - positional on purpose: called once per request
    ctx: WorkerContext,
    http_version: str,
    method: str,
    scheme: str,
    raw_path: bytes,
    query_string: bytes,
    headers: Headers,
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    proxy_trust: ProxyTrust | None,
    *,
    tls: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``http`` scope of one request.

    *proxy_trust* is given only when the connection's peer is a trusted proxy: the protocol
    decides that once per connection, not per request. *tls* is the connection's ASGI ``tls``
    extension (:func:`pounce.transport.tls.tls_extension`), shared by its requests.
    """
    # Percent-decoded as UTF-8; invalid sequences become U+FFFD, never an error.
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    if ctx.root_path:
        path = ctx.root_path + path
        raw_path = ctx.root_path_bytes + raw_path
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": ASGI_VERSION, "spec_version": HTTP_SPEC_VERSION},
        "http_version": http_version,
        "server": server,
        "client": client,
        "scheme": scheme,
        "method": method,
        "root_path": ctx.root_path,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "headers": headers,
        "state": ctx.state.copy(),
        "extensions": {
            "http.response.pathsend": {},
            "http.response.trailers": {},
            "http.response.early_hint": {},
        },
    }
    if tls is not None:
        scope["extensions"]["tls"] = tls
    if proxy_trust is not None:
        apply_trusted_proxy_headers(scope, proxy_trust)
    return scope
