"""The one exception type for bad configuration.

A :class:`ConfigError` always names the option, the offending value and what
would have been accepted, and -- once the configuration sources have been
merged -- where the value came from (``cli --port``, ``env POUNCE_PORT``,
``pounce.toml`` ...).  Without the source, "invalid port 'abc'" sends people
hunting through their shell, their container environment and their config
file; with it, they know which one to open.

It is a :class:`ValueError` (so generic code that validates input keeps
working) and a :class:`~pounce.errors.StartupError` (so anything that catches
start-up failures also catches it).  The CLI checks for it first and exits with
code 2, the conventional "usage error" status, rather than 3.
"""

from __future__ import annotations

from typing import Final

from pounce.errors import StartupError

__all__ = ["ConfigError"]


class _Unset:
    """Marker for "no value was involved" (``None`` is a legitimate value)."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Final = _Unset()

#: Options whose values must never be echoed back in an error message.
SECRET_OPTIONS: Final = frozenset({"ssl_keyfile_password"})

_MAX_VALUE_REPR = 80


def _show(option: str | None, value: object) -> str:
    if option in SECRET_OPTIONS:
        return "'********'"
    text = repr(value)
    if len(text) > _MAX_VALUE_REPR:
        text = text[: _MAX_VALUE_REPR - 3] + "..."
    return text


class ConfigError(StartupError, ValueError):
    """A configuration value is invalid, unknown or conflicts with another.

    ``option`` is the field name (``"port"``), ``value`` the rejected value,
    ``reason`` what is allowed or what to do instead, and ``source`` where the
    value came from, when known.  ``str(err)`` renders all of it on one line::

        invalid port 70000 (from env POUNCE_PORT): expected an integer from 0 to 65535
    """

    reason: str
    option: str | None
    value: object
    source: str | None

    def __init__(
        self,
        reason: str,
        *,
        option: str | None = None,
        value: object = UNSET,
        source: str | None = None,
    ) -> None:
        self.reason = reason
        self.option = option
        self.value = value
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = f" (from {self.source})" if self.source else ""
        if self.option is None:
            return f"{self.reason}{where}"
        if self.value is UNSET:
            return f"{self.option}{where}: {self.reason}"
        return f"invalid {self.option} {_show(self.option, self.value)}{where}: {self.reason}"

    def __str__(self) -> str:
        return self._render()

    def with_source(self, source: str) -> ConfigError:
        """Return a copy that also says where the offending value came from.

        The model validates values without knowing their origin; the source
        loader knows the origin but not what is wrong.  This joins the two.
        """
        if self.source is not None:
            return self
        err = ConfigError(self.reason, option=self.option, value=self.value, source=source)
        err.details = self.details
        return err
