"""The ``pounce`` command line; see :mod:`pounce.cli.main`."""

from pounce.cli.main import build_parser, main, version_string

__all__ = ["build_parser", "main", "version_string"]
