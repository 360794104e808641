"""Serve an app on an ephemeral port for the duration of a test.

::

    from pounce.testing import serve

    def test_homepage():
        with serve(app) as url:
            assert httpx.get(url + "/").status_code == 200
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pounce.main import build_config
from pounce.workers.server import Server

if TYPE_CHECKING:
    from pounce.asgi.types import ASGIApp


@dataclass(frozen=True)
class RunningServer:
    """A server started by :func:`serve_in_thread`."""

    server: Server
    thread: threading.Thread
    #: The first bound address, e.g. ``http://127.0.0.1:54321``.
    url: str


@contextmanager
def serve_in_thread(
    app: str | ASGIApp,
    *,
    startup_timeout: float = 10.0,
    force_stop: bool = False,
    event_handlers: Iterable[Callable[[Any], None]] = (),
    **options: Any,
) -> Iterator[RunningServer]:
    """Run *app* in a background thread on 127.0.0.1; yield the server, its thread and URL.

    For tests that need the :class:`~pounce.Server` itself (``shutdown()``, ``reload()``,
    ``stats()``). Options are :class:`pounce.config.ServerConfig` fields. The server stops
    gracefully when the block ends (at once with *force_stop*); start-up errors are raised.
    """
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    options.setdefault("access_log", False)
    # A test process starts many servers; each freeze would run a full collection of it.
    options.setdefault("gc_freeze", False)
    config = build_config(app, **options)
    server = Server(
        config, None if isinstance(app, str) else app, event_handlers=event_handlers
    )
    failure: list[BaseException] = []

    def target() -> None:
        try:
            server.serve()
        except BaseException as exc:
            failure.append(exc)
            server.started.set()

    thread = threading.Thread(target=target, name="pounce-test-server", daemon=True)
    thread.start()
    if not server.started.wait(startup_timeout):
        server.shutdown(force=True)
        raise TimeoutError(f"the test server did not start within {startup_timeout}s")
    if failure:
        thread.join(startup_timeout)
        raise failure[0]
    try:
        yield RunningServer(server, thread, server.bound_addresses[0])
    finally:
        server.shutdown(force=force_stop)
        thread.join(config.timeout_graceful_shutdown + 5)
        if failure:
            raise failure[0]


@contextmanager
def serve(
    app: str | ASGIApp, *, startup_timeout: float = 10.0, **options: Any
) -> Iterator[str]:
    """Run *app* in a background thread on 127.0.0.1 and yield its base URL.

    Options are :class:`pounce.config.ServerConfig` fields. The server is stopped gracefully
    when the block ends. Start-up errors (import, lifespan) are raised here.
    """
    with serve_in_thread(app, startup_timeout=startup_timeout, **options) as running:
        yield running.url
