"""Pounce logging: set-up, formatters, the access log and log escaping.

Importing this package registers the ``TRACE`` level (5) with :mod:`logging`.
"""

from pounce.logs.access import (
    AccessInfo,
    AccessLogger,
    AccessLogSettings,
    compile_access_format,
)
from pounce.logs.escape import escape_for_log
from pounce.logs.formatters import JsonFormatter, TextFormatter, UvicornStyleFormatter
from pounce.logs.setup import (
    ACCESS_LOGGER_NAME,
    ERROR_LOGGER_NAME,
    LOG_LEVELS,
    ROOT_LOGGER_NAME,
    TRACE,
    LoggingSettings,
    configure_logging,
    configure_logging_from_config,
    parse_log_level,
)

__all__ = [
    "ACCESS_LOGGER_NAME",
    "ERROR_LOGGER_NAME",
    "LOG_LEVELS",
    "ROOT_LOGGER_NAME",
    "TRACE",
    "AccessInfo",
    "AccessLogSettings",
    "AccessLogger",
    "JsonFormatter",
    "LoggingSettings",
    "TextFormatter",
    "UvicornStyleFormatter",
    "compile_access_format",
    "configure_logging",
    "configure_logging_from_config",
    "escape_for_log",
    "parse_log_level",
]
