"""Pounce's lifecycle events: what a subscriber of :meth:`pounce.Server.subscribe` receives.

Every event is a frozen dataclass (``dataclasses.asdict`` turns it into a dict). Subscribe with
``Server(config, app, event_handlers=[handler])``, ``pounce.run(..., event_handlers=[...])`` or
``server.subscribe(handler, kinds=(RequestCompleted,))``. Handlers run in the server's event
thread, off the request path; see ``docs/events.md``.

Server level (published by the supervisor): :class:`ServerStarted`, :class:`ServerStopping`,
:class:`ServerStopped`, :class:`WorkerStarted`, :class:`WorkerStopped`, :class:`WorkerCrashed`,
:class:`WorkerRecycled`, :class:`ReloadStarted`, :class:`ReloadCompleted`,
:class:`ReloadFailed`.

Connection and request level (published by each worker): :class:`ConnectionOpened`,
:class:`ConnectionClosed`, :class:`RequestStarted`, :class:`RequestCompleted`,
:class:`RequestRejected`, :class:`ClientDisconnected`, :class:`WebSocketOpened`,
:class:`WebSocketClosed`. With process workers these stay in the worker's process.
"""

from __future__ import annotations

from pounce.pipeline.events import (
    EVENT_TYPES,
    SERVER_EVENT_TYPES,
    ClientDisconnected,
    ConnectionClosed,
    ConnectionOpened,
    Event,
    EventHandler,
    ReloadCompleted,
    ReloadFailed,
    ReloadStarted,
    RequestCompleted,
    RequestRejected,
    RequestStarted,
    ServerStarted,
    ServerStopped,
    ServerStopping,
    WebSocketClosed,
    WebSocketOpened,
    WorkerCrashed,
    WorkerRecycled,
    WorkerStarted,
    WorkerStopped,
)
from pounce.pipeline.hub import ALL_EVENT_TYPES, DEFAULT_BUFFER_SIZE, EventHub

#: Events published by each worker (connections, requests, WebSocket sessions).
REQUEST_EVENT_TYPES = EVENT_TYPES

__all__ = [
    "ALL_EVENT_TYPES",
    "DEFAULT_BUFFER_SIZE",
    "REQUEST_EVENT_TYPES",
    "SERVER_EVENT_TYPES",
    "ClientDisconnected",
    "ConnectionClosed",
    "ConnectionOpened",
    "Event",
    "EventHandler",
    "EventHub",
    "ReloadCompleted",
    "ReloadFailed",
    "ReloadStarted",
    "RequestCompleted",
    "RequestRejected",
    "RequestStarted",
    "ServerStarted",
    "ServerStopped",
    "ServerStopping",
    "WebSocketClosed",
    "WebSocketOpened",
    "WorkerCrashed",
    "WorkerRecycled",
    "WorkerStarted",
    "WorkerStopped",
]
