"""Logging set-up: levels, default handlers, user ``dictConfig`` files.

Pounce logs through two well-known loggers:

* ``pounce.error`` -- server messages (start-up, shutdown, errors).  Its
  default handler lives on the parent ``pounce`` logger so module loggers such
  as ``pounce.features.proxy_headers`` land in the same place.
* ``pounce.access`` -- one line per response, on stdout by default so it can be
  piped separately from diagnostics.

The ``asyncio`` logger (errors on a worker's event loop) is routed like
``pounce.error``, so those messages share its format (text or JSON).

Both pounce handlers are installed with ``propagate=False`` so that an
application that configures the root logger does not print every line twice.
"""

from __future__ import annotations

import configparser
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

from pounce.config.errors import ConfigError
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
#: asyncio reports what goes wrong on a worker's loop (an exception in a callback, a task
#: whose exception nobody retrieved, accept() failures) on this logger.  It gets Pounce's
#: handler and format, so ``--log-format json`` output stays one JSON object per line.
ASYNCIO_LOGGER_NAME = "asyncio"

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
    for name in (ROOT_LOGGER_NAME, ACCESS_LOGGER_NAME, ASYNCIO_LOGGER_NAME):
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
    routes = (
        (ROOT_LOGGER_NAME, error_stream),
        (ACCESS_LOGGER_NAME, access_stream),
        (ASYNCIO_LOGGER_NAME, error_stream),
    )
    for name, stream in routes:
        handler = _PounceStreamHandler(stream)
        handler.setFormatter(_make_formatter(log_format, stream, use_colors))
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
    # pounce.error and pounce.access inherit the level set on "pounce".  asyncio keeps its
    # own level: its debug chatter is not Pounce's, and WARNING (from the root) lets through
    # what matters.
    logging.getLogger(ERROR_LOGGER_NAME).setLevel(logging.NOTSET)
    logging.getLogger(ACCESS_LOGGER_NAME).setLevel(logging.NOTSET)


def _load_yaml(text: str, path: Path) -> Any:
    # Imported lazily and by name: PyYAML is an optional dependency, and a
    # missing module must become a clear message, not an ImportError at start-up.
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        raise _file_error(path, "it is YAML, which needs PyYAML: pip install pyyaml") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # PyYAML's message spans several lines and quotes the source; its problem and
        # position are what an operator needs.
        problem = getattr(exc, "problem", None) or str(exc)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise _file_error(path, f"not valid YAML: {problem}{where}") from None


def _file_error(path: Path, problem: str) -> ConfigError:
    """One line naming the file and the problem (a ConfigError: the CLI exits 2, no traceback)."""
    return ConfigError(
        " ".join(f"invalid log config file {str(path)!r}: {problem}".split())
    )


def _describe(exc: BaseException) -> str:
    """The message of *exc* and of its causes: dictConfig wraps the useful part.

    ``Unable to configure formatter 'default'`` alone does not say that the formatter's class
    could not be imported; its ``__cause__`` does.
    """
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 4:
        text = str(current) or type(current).__name__
        if isinstance(current, (KeyError, json.JSONDecodeError)) or not str(current):
            text = f"{type(current).__name__}: {text}"
        if not parts or text not in parts[-1]:
            parts.append(text)
        current = current.__cause__ or current.__context__
    return ": ".join(parts)


def _apply_config_file(path: Path) -> None:
    """Apply a JSON/YAML dictConfig or an INI fileConfig; errors name the file."""
    if not path.is_file():
        raise _file_error(path, "the file does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in {".json", ".yaml", ".yml"}:
            text = path.read_text(encoding="utf-8")
            if suffix == ".json":
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise _file_error(
                        path, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
                    ) from None
            else:
                data = _load_yaml(text, path)
            if not isinstance(data, dict):
                raise _file_error(path, "top level must be a mapping (a logging dictConfig)")
            _apply_dict_config(data)
        else:
            parser = configparser.ConfigParser()
            with path.open(encoding="utf-8") as f:
                parser.read_file(f)
            mentioned = _adapt_uvicorn_ini(parser)
            try:
                # fileConfig's own default would silence every logger created before
                # this call (including the application's); keep them alive.
                logging.config.fileConfig(parser, disable_existing_loggers=False)
            except KeyError as exc:
                raise _file_error(path, f"missing section or key {exc}") from None
            _alias_uvicorn_loggers(mentioned)
    except ConfigError:
        raise
    except Exception as exc:
        # json/yaml/configparser/dictConfig/fileConfig raise a zoo of types (KeyError,
        # TypeError, ImportError, ValueError, YAML errors, OSError ...).  They all mean the
        # same thing to an operator: this file is wrong, and here is the line that says how.
        raise _file_error(path, _describe(exc)) from exc


# Uvicorn's logger names and formatter classes, and what stands for them here.  A
# --log-config written for Uvicorn then configures Pounce's loggers unchanged.
UVICORN_LOGGER_ALIASES: Mapping[str, str] = {
    "uvicorn": ROOT_LOGGER_NAME,
    "uvicorn.error": ERROR_LOGGER_NAME,
    "uvicorn.access": ACCESS_LOGGER_NAME,
}
_UVICORN_FORMATTERS = frozenset(
    {
        "uvicorn.logging.DefaultFormatter",
        "uvicorn.logging.AccessFormatter",
        "uvicorn.logging.ColourizedFormatter",
    }
)
_UVICORN_STYLE_FORMATTER = "pounce.logs.formatters.UvicornStyleFormatter"


def _adapt_uvicorn_dict(config: dict[str, Any]) -> set[str]:
    """Swap Uvicorn's formatter classes for :class:`UvicornStyleFormatter` (in place).

    Returns the logger names the configuration sets, for :func:`_alias_uvicorn_loggers`.
    Uvicorn's own classes are replaced even when Uvicorn is installed: its access formatter
    expects Uvicorn's record arguments and would fail on every access line.
    """
    formatters = config.get("formatters")
    if isinstance(formatters, Mapping):
        adapted: dict[str, Any] = {}
        for name, spec in formatters.items():
            if isinstance(spec, Mapping):
                adapted[name] = {
                    key: _UVICORN_STYLE_FORMATTER
                    if key in ("()", "class") and value in _UVICORN_FORMATTERS
                    else value
                    for key, value in spec.items()
                }
            else:
                adapted[name] = spec
        config["formatters"] = adapted
    loggers = config.get("loggers")
    return set(loggers) if isinstance(loggers, Mapping) else set()


def _adapt_uvicorn_ini(parser: configparser.ConfigParser) -> set[str]:
    """The INI counterpart of :func:`_adapt_uvicorn_dict` (edits *parser* in place)."""
    for section in parser.sections():
        factory = parser.get(section, "class", raw=True, fallback=None)
        if section.startswith("formatter_") and factory in _UVICORN_FORMATTERS:
            parser.set(section, "class", _UVICORN_STYLE_FORMATTER)
    mentioned = set()
    for section in parser.sections():
        if section.startswith("logger_"):
            mentioned.add(parser.get(section, "qualname", raw=True, fallback=section[7:]))
    return mentioned


def _alias_uvicorn_loggers(mentioned: set[str]) -> None:
    """Give ``pounce*`` loggers the set-up the file gave their ``uvicorn*`` counterparts.

    Only where the file configures the Uvicorn name and not the Pounce one: a file that
    names both means what it says.  The Uvicorn loggers keep their set-up too.
    """
    for theirs, ours in UVICORN_LOGGER_ALIASES.items():
        if theirs not in mentioned or ours in mentioned:
            continue
        source = logging.getLogger(theirs)
        target = logging.getLogger(ours)
        for handler in list(target.handlers):
            target.removeHandler(handler)
        for handler in source.handlers:
            target.addHandler(handler)
        target.setLevel(source.level)
        target.propagate = source.propagate
        target.disabled = source.disabled


def _apply_dict_config(data: Mapping[str, Any]) -> None:
    config = dict(data)
    # dictConfig defaults to disabling every existing logger not named in the
    # file, which silently mutes the application's loggers; opt out unless the
    # file asks for it explicitly.
    config.setdefault("disable_existing_loggers", False)
    config.setdefault("version", 1)
    mentioned = _adapt_uvicorn_dict(config)
    logging.config.dictConfig(config)
    _alias_uvicorn_loggers(mentioned)


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
      ``fileConfig``.  Any failure raises :class:`~pounce.config.ConfigError` (a
      ``ValueError``) whose one-line message names the file and the problem.  Uvicorn's
      logger names (``uvicorn``, ``uvicorn.error``, ``uvicorn.access``) configure the
      matching ``pounce`` loggers too, and Uvicorn's formatter classes are replaced by
      :class:`~pounce.logs.formatters.UvicornStyleFormatter`, so a Uvicorn file works as is.
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
                raise ConfigError(f"invalid log config: {_describe(exc)}") from exc
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
