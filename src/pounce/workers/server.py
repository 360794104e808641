"""The Server: imports the app, binds, runs the worker pool, and shuts down gracefully.

Every configuration goes through the same path -- import the app once, choose the worker model
(:func:`pounce.workers.model.choose_model`), bind the sockets once, hand everything to the
:class:`~pounce.workers.supervisor.Supervisor`. With one worker (the default) that is a single
event loop in a thread of this process listening on the socket itself: no distributor, no
extra hop on the request path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pounce.pipeline.events import ServerStarted, ServerStopped
from pounce.pipeline.hub import EventHub
from pounce.server.signals import install_signal_handlers
from pounce.server.sockets import bind_sockets, describe
from pounce.transport.tls import create_ssl_context
from pounce.workers.model import choose_model
from pounce.workers.reload import AppLoader
from pounce.workers.supervisor import Supervisor

if TYPE_CHECKING:
    from types import FrameType

    from pounce.asgi.types import ASGIApp
    from pounce.config import ServerConfig

logger = logging.getLogger("pounce.error")


class Server:
    """A Pounce server for one config and one app.

    ``serve()`` blocks until the server has stopped; ``shutdown()``, ``reload()``,
    ``scale()`` and ``subscribe()`` may be called from any thread (or a signal handler).

    *event_handlers* are subscribed to every event kind (see :mod:`pounce.events`), after
    the config's own ``event_handlers``.
    """

    def __init__(
        self,
        config: ServerConfig,
        app: ASGIApp | None = None,
        *,
        event_handlers: Iterable[Callable[[Any], None]] = (),
    ) -> None:
        self.config = config
        self._events = EventHub((*config.event_handlers, *event_handlers))
        self._app = app
        #: The addresses actually bound (useful with port 0), e.g. ``http://127.0.0.1:8000``.
        self.bound_addresses: list[str] = []
        #: Set once the server accepts connections, or when start-up failed.
        self.started = threading.Event()
        #: Why start-up failed, when it did.
        self.startup_error: BaseException | None = None
        #: True when a second signal forced the exit without draining.
        self.forced = False
        self._lock = threading.Lock()
        self._supervisor: Supervisor | None = None
        self._stop_requested: bool | None = None
        self._signals_seen = 0
        self._sockets: list[socket.socket] = []

    # -- control (any thread) -------------------------------------------------------------------

    def serve(self) -> None:
        """Run the server in this thread until it stops. Raises ``StartupError`` subclasses."""
        config = self.config
        loader = AppLoader(config, self._app)
        try:
            app = loader.load()
            model = choose_model(config)
            if config.ssl_enabled:
                # Fail here, in one line, rather than in every worker; each builds its own.
                create_ssl_context(config)
            self._sockets = bind_sockets(config, reuse_port=model.accept == "reuseport")
            scheme = "https" if config.ssl_enabled else "http"
            self.bound_addresses = [describe(sock, scheme) for sock in self._sockets]
            supervisor = Supervisor(
                config,
                model,
                loader,
                app,
                self._sockets,
                close_listeners=self._close_sockets,
                event_hub=self._events,
            )
        except BaseException as exc:
            self.startup_error = exc
            self._close_sockets()
            self.started.set()
            raise
        # The supervisor owns the app from here; this frame lives as long as the server, and a
        # reference here would keep the first app (and its modules) alive after a reload.
        del app
        with self._lock:
            self._supervisor = supervisor
            stop_early = self._stop_requested
        if stop_early is not None:
            supervisor.request_stop(force=stop_early)
        restore_signals = self._install_signal_handlers()
        self._write_pid_file()
        self._events.start()
        try:
            logger.info("Worker model: %s", model.describe())
            self._log_websocket_support()
            supervisor.run(on_started=self._on_started)
        except BaseException as exc:
            if not self.started.is_set():
                self.startup_error = exc
            raise
        finally:
            self.started.set()
            restore_signals()
            self._remove_pid_file()
            self._close_sockets()
            self._events.publish(ServerStopped(requests_total=supervisor.stats()["requests_total"]))
            self._events.stop()
            logger.info("Finished server process [%d]", os.getpid())

    def shutdown(self, *, force: bool = False) -> None:
        """Stop gracefully (or at once with *force*). Thread-safe and idempotent."""
        with self._lock:
            self._stop_requested = force or bool(self._stop_requested)
            supervisor = self._supervisor
        if force:
            self.forced = True
        if supervisor is not None:
            supervisor.request_stop(force=force)

    def reload(self) -> None:
        """Rolling reload: a new generation with freshly imported code takes over."""
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.request_reload()

    def scale(self, delta: int) -> None:
        """Add (``+1``) or remove (``-1``) a worker, as SIGTTIN/SIGTTOU do."""
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.request_scale(delta)

    def subscribe(
        self, handler: Callable[[Any], None], kinds: Iterable[type] | None = None
    ) -> Callable[[], None]:
        """Call *handler* for each event of *kinds* (every kind when None); returns unsubscribe.

        Handlers run in the server's event thread, never on a request's path: a slow handler
        only delays its own events (beyond its buffer they are dropped and counted in
        ``stats()["events_dropped"]``), and one that raises is logged once and keeps receiving.
        With process workers, request and connection events stay in their process: here one
        sees the server, worker and reload life cycle.
        """
        return self._events.subscribe(handler, kinds)

    def stats(self) -> dict[str, Any]:
        """Per-worker request and connection counts, merged when read, and event drops."""
        supervisor = self._supervisor
        stats = supervisor.stats() if supervisor is not None else {"workers": []}
        stats.update(self._events.stats())
        return stats

    # -- internals ------------------------------------------------------------------------------

    def _log_websocket_support(self) -> None:
        from pounce.protocols.websocket import describe_support, how_to_enable, ignored_options

        logger.info("%s", describe_support(self.config))
        for flag in ignored_options(self.config):
            logger.warning(
                "%s has no effect: WebSocket support is off; to turn it on, %s",
                flag,
                how_to_enable(self.config),
            )

    def _on_started(self) -> None:
        for address in self.bound_addresses:
            logger.info("Pounce running on %s (Press CTRL+C to quit)", address)
        for prefix, directory in self.config.static:
            logger.info("Serving the files of %s under %s", os.path.realpath(directory), prefix)
        supervisor = self._supervisor
        self._events.publish(
            ServerStarted(
                addresses=tuple(self.bound_addresses),
                model=supervisor.model.describe() if supervisor is not None else "",
                pid=os.getpid(),
            )
        )
        self.started.set()

    def _write_pid_file(self) -> None:
        path = self.config.pid_file
        if path is None:
            return
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, path)

    def _remove_pid_file(self) -> None:
        path = self.config.pid_file
        if path is None:
            return
        with contextlib.suppress(OSError), open(path, encoding="ascii") as f:
            if f.read().strip() != str(os.getpid()):
                return  # another server owns it now
        with contextlib.suppress(OSError):
            os.unlink(path)

    def _close_sockets(self) -> None:
        # An inherited socket (fd://N, e.g. from the --reload parent) belongs to whoever
        # passed it: its unix path must survive us, or the next child would find no file.
        inherited = {spec.fd for spec in self.config.bind_specs if spec.kind == "fd"}
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                if sock.family == socket.AF_UNIX and sock.fileno() not in inherited:
                    path = sock.getsockname()
                    if isinstance(path, str) and path:
                        os.unlink(path)
            sock.close()
        self._sockets = []

    # -- signals (main thread only) -------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGINT/SIGTERM drain (a second one exits at once); SIGHUP reloads; SIGTTIN/SIGTTOU
        add/remove a worker. Handlers only enqueue work for the supervisor."""
        return install_signal_handlers(
            {
                "SIGINT": self._on_stop_signal,
                "SIGTERM": self._on_stop_signal,
                "SIGHUP": self._on_hup,
                "SIGTTIN": self._on_ttin,
                "SIGTTOU": self._on_ttou,
            }
        )

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals_seen += 1
        if self._signals_seen == 1:
            logger.info(
                "Received %s: shutting down gracefully (send again to exit at once)",
                signal.Signals(signum).name,
            )
            self.shutdown()
        else:
            logger.warning("Received %s again: exiting now", signal.Signals(signum).name)
            self.shutdown(force=True)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        logger.info("Received SIGHUP: rolling reload")
        self.reload()

    def _on_ttin(self, signum: int, frame: FrameType | None) -> None:
        self.scale(+1)

    def _on_ttou(self, signum: int, frame: FrameType | None) -> None:
        self.scale(-1)
