"""Log formatters: human-readable text (optionally coloured) and JSON lines.

Both formatters are usable from a user's ``dictConfig`` file, e.g.::

    formatters:
      pounce_text:
        "()": pounce.logs.TextFormatter
        fmt: "%(asctime)s %(message)s"
        use_colors: false
      pounce_json:
        "()": pounce.logs.JsonFormatter

Neither formatter mutates the :class:`logging.LogRecord` beyond what
:class:`logging.Formatter` itself does (``message``/``asctime``), because the
same record may be formatted concurrently by several handlers on several
threads.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["JsonFormatter", "TextFormatter", "UvicornStyleFormatter"]

# Numeric value of the TRACE level.  Defined here (rather than imported from
# ``setup``) so the formatters have no import-order dependency on it.
_TRACE = 5

# Width of the "LEVEL:" column: "CRITICAL:" is the longest name (9 chars), so
# every message starts in the same column.
_PREFIX_WIDTH = 9

_RESET = "\x1b[0m"
_LEVEL_COLOURS: dict[int, str] = {
    _TRACE: "\x1b[34m",  # blue
    logging.DEBUG: "\x1b[36m",  # cyan
    logging.INFO: "\x1b[32m",  # green
    logging.WARNING: "\x1b[33m",  # yellow
    logging.ERROR: "\x1b[31m",  # red
    logging.CRITICAL: "\x1b[91m",  # bright red
}


class TextFormatter(logging.Formatter):
    """``LEVEL:     message`` lines, with the level coloured when asked to.

    The level prefix is computed per call rather than stored on the record, so
    two handlers (one coloured, one not) can format the same record safely.
    ``use_colors`` is a plain bool here: deciding "auto" needs the stream,
    which only the handler set-up (:func:`pounce.logs.configure_logging`) knows.
    """

    def __init__(
        self,
        fmt: str | None = "%(message)s",
        datefmt: str | None = None,
        style: Literal["%", "{", "$"] = "%",
        *,
        use_colors: bool = False,
    ) -> None:
        super().__init__(fmt=fmt, datefmt=datefmt, style=style)
        self.use_colors = use_colors

    def level_prefix(self, record: logging.LogRecord) -> str:
        """Return the padded ``LEVEL:`` column for ``record``."""
        name = record.levelname
        padding = " " * max(_PREFIX_WIDTH - len(name) - 1, 0)
        if self.use_colors:
            colour = _LEVEL_COLOURS.get(record.levelno)
            if colour is not None:
                return f"{colour}{name}{_RESET}:{padding}"
        return f"{name}:{padding}"

    def format(self, record: logging.LogRecord) -> str:
        """Prefix the standard formatting with the level column."""
        return f"{self.level_prefix(record)} {super().format(record)}"


def _standard_record_attributes() -> frozenset[str]:
    """Names every LogRecord has, so anything else must have come from ``extra``."""
    blank = logging.makeLogRecord({})
    # "message" and "asctime" are added by Formatter.format; "taskName" exists
    # from Python 3.12 on and would otherwise leak into 3.12+ output only.
    return frozenset(vars(blank)) | {"message", "asctime", "taskName"}


_STANDARD_ATTRIBUTES = _standard_record_attributes()


def _iso_utc(created: float) -> str:
    """ISO-8601 timestamp in UTC with millisecond precision and a ``Z`` suffix."""
    stamp = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message`` + extras.

    Fields passed through ``extra=`` become top-level keys, which is how the
    access log ships structured data (status, duration, ...) to log pipelines.
    Output is forced to ASCII (``ensure_ascii``): JSON escaping then guarantees
    that nothing in a value -- newline, U+2028, terminal escape -- can break the
    one-object-per-line framing, whatever the value's origin.  Values that are
    not JSON-serialisable are logged via ``str()`` instead of failing the record.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Serialise ``record`` as a single JSON line."""
        payload: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in payload:
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc_info"] = record.exc_text
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=True, default=str, separators=(",", ":"))


class UvicornStyleFormatter(TextFormatter):
    """Formats with Uvicorn's record fields, so a ``--log-config`` written for Uvicorn works.

    Uvicorn's own formatters (``uvicorn.logging.DefaultFormatter`` / ``AccessFormatter``)
    read fields Pounce's records do not carry -- the access one unpacks ``record.args`` as a
    5-tuple and fails on every line -- and may not even be installed. A dictConfig naming
    them gets this class instead (see :mod:`pounce.logs.setup`). It provides the fields
    Uvicorn format strings use:

    * ``%(levelprefix)s`` -- ``INFO:`` padded to one column (coloured with ``use_colors``);
    * ``%(client_addr)s``, ``%(request_line)s``, ``%(status_code)s`` -- from the access
      log's structured fields, which the access logger attaches when it sees this formatter.

    The fields are set on a copy of the record: other handlers may be formatting the same
    record on other threads.
    """

    #: Tells :class:`pounce.logs.AccessLogger` to attach its structured fields to records.
    wants_access_fields = True

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Literal["%", "{", "$"] = "%",
        use_colors: bool | None = None,
    ) -> None:
        super().__init__(fmt=fmt or "%(levelprefix)s %(message)s", datefmt=datefmt, style=style)
        self.use_colors = bool(use_colors)

    def format(self, record: logging.LogRecord) -> str:
        """Standard formatting of a copy of ``record`` with the Uvicorn fields filled in."""
        fields = dict(vars(record))
        fields["levelprefix"] = self.level_prefix(record)
        if "status" in fields:
            fields.setdefault("status_code", fields["status"])
            query = fields.get("query") or ""
            target = f"{fields.get('path', '')}?{query}" if query else fields.get("path", "")
            fields.setdefault(
                "request_line",
                f"{fields.get('method', '-')} {target} HTTP/{fields.get('http_version', '-')}",
            )
        for name in ("client_addr", "request_line", "status_code"):
            fields.setdefault(name, "-")
        return logging.Formatter.format(self, logging.makeLogRecord(fields))
