"""Pounce configuration: one validated :class:`ServerConfig` and where it came from.

``ServerConfig`` holds every setting; :func:`load_config` merges defaults, the
config file, the environment and command-line values (in that order of
precedence) and records the source of each value; :class:`ConfigError` is the
single exception for anything wrong with them.
"""

from pounce.config.errors import ConfigError
from pounce.config.model import (
    FIELD_DOCS,
    GROUPS,
    UNSUPPORTED_OPTIONS,
    FieldDoc,
    ServerConfig,
    unsupported_options,
)
from pounce.config.sources import LoadedConfig, load_config, load_env_file, parse_dotenv
from pounce.config.values import (
    BindSpec,
    parse_bind,
    parse_bool,
    parse_duration,
    parse_size,
)

__all__ = [
    "FIELD_DOCS",
    "GROUPS",
    "UNSUPPORTED_OPTIONS",
    "BindSpec",
    "ConfigError",
    "FieldDoc",
    "LoadedConfig",
    "ServerConfig",
    "load_config",
    "load_env_file",
    "parse_bind",
    "parse_bool",
    "parse_dotenv",
    "parse_duration",
    "parse_size",
    "unsupported_options",
]
