"""Logging set-up: levels, default handlers, user ``dictConfig`` files.

Pounce logs through two well-known loggers:

* ``pounce.error`` -- server messages (start-up, shutdown, errors).  Its
  default handler lives on the parent ``pounce`` logger so module loggers such
  as ``pounce.features.proxy_headers`` land in the same place.
* ``pounce.access`` -- one line per response, on stdout by default so it can be
  piped separately from diagnostics.

Both pounce handlers are installed with ``propagate=False`` so that an
application that configures the root logger does not print every line twice.
"""

from __future__ import annotations

import importlib
import json
import logging
import logging.config
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

from pounce.logs.formatters import JsonFormatter, TextFormatter

__all__ = [
    "ACCESS_LOGGER_NAME",
    "ERROR_LOGGER_NAME",
    "LOG_LEVELS",
    "ROOT_LOGGER_NAME",
    "TRACE",
    "LoggingSettings",
    "configure_logging",
    "configure_logging_from_config",
    "parse_log_level",
]

TRACE = 5
"""Below DEBUG: protocol-level chatter (every event, every byte count)."""

ROOT_LOGGER_NAME = "pounce"
ERROR_LOGGER_NAME = "pounce.error"
ACCESS_LOGGER_NAME = "pounce.access"

LOG_LEVELS: Mapping[str, int] = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

# Registering a level name is idempotent, so importing this module repeatedly
# (or from several threads) is harmless.
logging.addLevelName(TRACE, "TRACE")

# configure_logging mutates process-global logging state (handlers, levels);
# serialise whole calls so two concurrent calls cannot interleave their
# remove/add steps and leave duplicated handlers behind.
_CONFIGURE_LOCK = threading.Lock()


class LoggingSettings(Protocol):
    """The ``ServerConfig`` fields logging set-up reads.

    A structural type rather than an import of ``ServerConfig``: the config
    package must be free to import ``pounce.logs`` without a cycle, and any
    object with these attributes (a test double, a config from another
    loader) works.  ``ServerConfig`` satisfies it as-is.
    """

    @property
    def log_level(self) -> str | int | None: ...
    @property
    def log_config(self) -> str | os.PathLike[str] | None: ...
    @property
    def log_format(self) -> str: ...
    @property
    def use_colors(self) -> bool | None: ...


class _PounceStreamHandler(logging.StreamHandler[TextIO]):
    """Marker type for the handlers configure_logging installs itself.

    Recognising our own handlers by type is what makes configure_logging
    idempotent without touching handlers that users or libraries added.
    """


def parse_log_level(value: str | int) -> int:
    """Return the numeric level for a name (case-insensitive) or a number."""
    if isinstance(value, bool):
        raise ValueError(f"invalid log level {value!r}")
    if isinstance(value, int):
        return value
    try:
        return LOG_LEVELS[value.strip().lower()]
    except KeyError:
        choices = ", ".join(LOG_LEVELS)
        raise ValueError(f"invalid log level {value!r}: expected one of {choices}") from None


def _wants_colour(stream: TextIO, use_colors: bool | None) -> bool:
    """Colours are forced by True/False, otherwise only for a terminal."""
    if use_colors is not None:
        return use_colors
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (ValueError, OSError):  # closed or detached stream
        return False


def _make_formatter(log_format: str, stream: TextIO, use_colors: bool | None) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter(use_colors=_wants_colour(stream, use_colors))
    raise ValueError(f"invalid log format {log_format!r}: expected 'text' or 'json'")


def _remove_default_handlers() -> None:
    """Undo a previous default set-up (handlers and the propagate switch)."""
    for name in (ROOT_LOGGER_NAME, ACCESS_LOGGER_NAME):
        logger = logging.getLogger(name)
        ours = [h for h in logger.handlers if isinstance(h, _PounceStreamHandler)]
        for handler in ours:
            logger.removeHandler(handler)
            # StreamHandler.close() does not close the stream itself, only
            # unregisters the handler, so stdout/stderr stay usable.
            handler.close()
        if ours:
            logger.propagate = True


def _install_default_handlers(
    log_format: str,
    use_colors: bool | None,
    error_stream: TextIO,
    access_stream: TextIO,
) -> None:
    for name, stream in ((ROOT_LOGGER_NAME, error_stream), (ACCESS_LOGGER_NAME, access_stream)):
        handler = _PounceStreamHandler(stream)
        handler.setFormatter(_make_formatter(log_format, stream, use_colors))
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    # pounce.error and pounce.access inherit the level set on "pounce".
    logging.getLogger(ERROR_LOGGER_NAME).setLevel(logging.NOTSET)
    logging.getLogger(ACCESS_LOGGER_NAME).setLevel(logging.NOTSET)


def _load_yaml(text: str, path: Path) -> Any:
    # Imported lazily and by name: PyYAML is an optional dependency, and a
    # missing module must become a clear message, not an ImportError at start-up.
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        raise ValueError(
            f"log config {str(path)!r} is YAML, which needs PyYAML: pip install pyyaml"
        ) from None
    return yaml.safe_load(text)


def _apply_config_file(path: Path) -> None:
    """Apply a JSON/YAML dictConfig or an INI fileConfig; errors name the file."""
    if not path.is_file():
        raise ValueError(f"log config file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in {".json", ".yaml", ".yml"}:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if suffix == ".json" else _load_yaml(text, path)
            if not isinstance(data, dict):
                raise ValueError("top level must be a mapping (a logging dictConfig)")
            _apply_dict_config(data)
        else:
            # fileConfig's own default would silence every logger created before
            # this call (including the application's); keep them alive.
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ValueError as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"invalid log config file {str(path)!r}: {exc}") from exc
    except Exception as exc:
        # dictConfig/fileConfig raise a zoo of types (KeyError, TypeError,
        # ImportError, configparser errors, YAML errors, OSError ...).  They
        # all mean the same thing to an operator: this file is wrong.
        raise ValueError(
            f"invalid log config file {str(path)!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _apply_dict_config(data: Mapping[str, Any]) -> None:
    config = dict(data)
    # dictConfig defaults to disabling every existing logger not named in the
    # file, which silently mutes the application's loggers; opt out unless the
    # file asks for it explicitly.
    config.setdefault("disable_existing_loggers", False)
    config.setdefault("version", 1)
    logging.config.dictConfig(config)


def configure_logging(
    *,
    log_level: str | int | None = "info",
    log_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    log_format: str = "text",
    use_colors: bool | None = None,
    error_stream: TextIO | None = None,
    access_stream: TextIO | None = None,
) -> None:
    """Set up pounce's loggers; safe to call again (e.g. on reload).

    * Without ``log_config``: ``pounce`` (and so ``pounce.error``) logs to
      ``error_stream`` (stderr) and ``pounce.access`` to ``access_stream``
      (stdout), with the text or JSON formatter.  Colours follow ``use_colors``
      (``None`` = only when the stream is a terminal).
    * With ``log_config`` (a path, or a dictConfig mapping): that configuration
      is authoritative and no default handlers are installed.  ``.json``,
      ``.yaml``/``.yml`` files are dictConfig; anything else is an INI
      ``fileConfig``.  Any failure raises :class:`ValueError` naming the file.
    * ``log_level`` (a name from :data:`LOG_LEVELS` or a number) is then set on
      the ``pounce`` logger, so it applies on top of a config file; ``None``
      leaves levels as they are.

    Handlers installed by a previous call are removed first, so calling this
    twice never duplicates output.  Streams are looked up at call time (not at
    import) so redirected ``sys.stdout``/``sys.stderr`` are honoured.
    """
    level = parse_log_level(log_level) if log_level is not None else None
    if log_format not in {"text", "json"}:
        raise ValueError(f"invalid log format {log_format!r}: expected 'text' or 'json'")
    with _CONFIGURE_LOCK:
        _remove_default_handlers()
        if log_config is None:
            _install_default_handlers(
                log_format,
                use_colors,
                error_stream if error_stream is not None else sys.stderr,
                access_stream if access_stream is not None else sys.stdout,
            )
        elif isinstance(log_config, Mapping):
            try:
                _apply_dict_config(log_config)
            except Exception as exc:
                raise ValueError(f"invalid log config: {type(exc).__name__}: {exc}") from exc
        else:
            _apply_config_file(Path(log_config))
        if level is not None:
            logging.getLogger(ROOT_LOGGER_NAME).setLevel(level)


def configure_logging_from_config(config: LoggingSettings) -> None:
    """Call :func:`configure_logging` with the logging fields of a ServerConfig."""
    configure_logging(
        log_level=config.log_level,
        log_config=config.log_config,
        log_format=config.log_format,
        use_colors=config.use_colors,
    )
