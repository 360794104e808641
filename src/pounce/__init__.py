"""Pounce: a production ASGI server in pure Python, built for free-threaded CPython."""

from pounce._version import __version__
from pounce.config import ConfigError, ServerConfig
from pounce.errors import StartupError
from pounce.main import run
from pounce.workers.server import Server

__all__ = ["ConfigError", "Server", "ServerConfig", "StartupError", "__version__", "run"]
