"""``pounce.run()``: the programmatic entry point the CLI also uses."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pounce.config import ConfigError, ServerConfig
from pounce.config.model import ineffective_reload_options, unsupported_options
from pounce.logs import configure_logging_from_config
from pounce.server.server import Server

if TYPE_CHECKING:
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
    app: str | ASGIApp | None = None, *, config: ServerConfig | None = None, **options: Any
) -> None:
    """Serve *app* until interrupted.

    ``app`` is an import string (``"module:attr"``) or the application object itself; options
    are :class:`ServerConfig` fields (``pounce.run("main:app", port=9000, workers=4)``), or pass
    a complete ``config=ServerConfig(...)``. Start-up failures raise
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
    Server(config, None if isinstance(app, str) or app is None else app).serve()
