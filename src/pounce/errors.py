"""Exceptions that stop Pounce before it starts serving.

Every failure that happens while the server is being set up -- a bad option,
an application that cannot be imported, an address that cannot be bound, a
lifespan handler that refuses to start -- derives from :class:`StartupError`.
That gives the command line one thing to catch: it prints the message as a
single ``pounce: error: ...`` line and exits with code 3, instead of dumping a
traceback of Pounce's own internals at someone whose only mistake was a typo.

Messages are written for the person running the server: they say what went
wrong *and* what to do about it.  When the cause is the user's own code (for
example an exception raised while their module was being imported) the
formatted traceback is kept in :attr:`StartupError.details`, so the CLI can
show it without hiding the one-line summary.
"""

from __future__ import annotations

__all__ = ["AppImportError", "StartupError"]


class StartupError(Exception):
    """Pounce could not start; the message says why and what to change.

    ``details`` optionally carries a multi-line explanation, typically the
    traceback of an exception raised by application code.  It is kept apart
    from the message so the message stays one line.
    """

    details: str | None

    def __init__(self, message: str, *, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details

    @property
    def message(self) -> str:
        """The one-line description given when the error was raised."""
        return str(self.args[0]) if self.args else ""


class AppImportError(StartupError):
    """The ASGI application named on the command line could not be loaded."""
