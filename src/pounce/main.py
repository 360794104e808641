"""``pounce.run()``: the programmatic entry point the CLI also uses."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from pounce.config import ConfigError, ServerConfig
from pounce.config.model import ineffective_reload_options, unsupported_options
from pounce.errors import StartupError
from pounce.logs import configure_logging_from_config
from pounce.workers.server import Server

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from pounce.asgi.types import ASGIApp

logger = logging.getLogger("pounce.error")


def build_config(
    app: str | ASGIApp | None = None, *, config: ServerConfig | None = None, **options: Any
) -> ServerConfig:
    """Merge ``run()``'s arguments into one validated :class:`ServerConfig`."""
    if config is None:
        if isinstance(app, str):
            options.setdefault("app", app)
        config = ServerConfig.from_mapping(options)
    elif options:
        config = config.replace(**options)
    elif isinstance(app, str) and config.app is None:
        config = config.replace(app=app)
    return config


def run(
    app: str | ASGIApp | None = None,
    *,
    config: ServerConfig | None = None,
    event_handlers: Iterable[Callable[[Any], None]] = (),
    **options: Any,
) -> None:
    """Serve *app* until interrupted.

    ``app`` is an import string (``"module:attr"``) or the application object itself; options
    are :class:`ServerConfig` fields (``pounce.run("main:app", port=9000, workers=4)``), or pass
    a complete ``config=ServerConfig(...)``. *event_handlers* receive the server's events
    (:mod:`pounce.events`). Start-up failures raise
    :class:`pounce.errors.StartupError` subclasses with a message that says what went wrong.
    """
    config = build_config(app, config=config, **options)
    unsupported = unsupported_options(config)
    if unsupported:
        raise ConfigError(f"not yet supported: {', '.join(unsupported)}")
    configure_logging_from_config(config)
    ineffective = ineffective_reload_options(config)
    if ineffective:
        logger.warning(
            "%s only matter with --reload, which is off: serving without watching files",
            ", ".join(ineffective),
        )
    if config.reload:
        if event_handlers or config.event_handlers:
            raise ConfigError(
                "event_handlers cannot follow --reload's child processes; drop reload, or "
                "subscribe inside the app"
            )
        # Dev reload restarts a child process that imports the app by name; an object
        # cannot be re-imported, so it cannot pick up changed code.
        if app is not None and not isinstance(app, str):
            raise ConfigError(
                "reload needs the application as an import string ('module:app'), "
                "not an object; pass the string or drop reload"
            )
        from pounce.workers.devreload import run_reloader

        run_reloader(config)
        return
    Server(
        config,
        None if isinstance(app, str) or app is None else app,
        event_handlers=event_handlers,
    ).serve()


def reload_child_main(fd: int) -> int:
    """Entry point of a ``--reload`` child: read the config from *fd* and serve it.

    Returns the process exit status, with the same meaning as the ``pounce`` command's
    (0 stopped, 2 configuration error, 3 start-up failure, whose traceback is printed).
    """
    from pounce.workers.devreload import EXIT_STARTUP, read_child_config

    config = read_child_config(fd)
    try:
        run(config=config)
    except ConfigError as exc:
        print(f"pounce: error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        if exc.details:
            print(exc.details, file=sys.stderr)
        print(f"pounce: error: {exc.message}", file=sys.stderr)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        return 0
    return 0
