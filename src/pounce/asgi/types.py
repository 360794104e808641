"""Type aliases for the ASGI interface, shared by every protocol and feature."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
#: Header fields only read, never changed: any sequence of pairs.
HeaderFields = Sequence[tuple[bytes, bytes]]

#: The ``asgi`` key of every scope. Built fresh per scope because apps may mutate scopes.
ASGI_VERSION = "3.0"
HTTP_SPEC_VERSION = "2.4"
