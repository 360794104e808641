"""Binding listening sockets from the configured addresses.

Sockets are bound once, by whoever starts the server, so that every worker (thread or process)
and every generation of a rolling reload serves the same sockets without re-binding.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from typing import TYPE_CHECKING

from pounce.errors import StartupError

if TYPE_CHECKING:
    from pounce.config import ServerConfig


class BindError(StartupError):
    """A configured address could not be bound."""


def bind_sockets(config: ServerConfig, *, reuse_port: bool = False) -> list[socket.socket]:
    """Bind and listen on every configured address, or raise :class:`BindError`.

    *reuse_port* sets ``SO_REUSEPORT`` on TCP sockets so that more sockets (one per worker,
    ``--accept reuseport``) can be bound to the same address afterwards.
    """
    sockets: list[socket.socket] = []
    try:
        for spec in config.bind_specs:
            if spec.kind == "fd":
                assert spec.fd is not None
                sock = socket.socket(fileno=spec.fd)
            elif spec.kind == "unix":
                assert spec.path is not None
                sock = _bind_unix(spec.path, config.backlog)
            else:
                assert spec.host is not None and spec.port is not None
                sock = _bind_tcp(spec.host, spec.port, config.backlog, reuse_port)
            sock.setblocking(False)
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_tcp(host: str, port: int, backlog: int, reuse_port: bool = False) -> socket.socket:
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
    except socket.gaierror as exc:
        raise BindError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise BindError(f"cannot bind to {shown}: {exc.strerror or exc}") from None
    return sock


def _bind_unix(path: str, backlog: int) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # a stale socket from a previous run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o666)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot bind to unix socket {path}: {exc.strerror or exc}") from None
    return sock


def describe(sock: socket.socket, scheme: str = "http") -> str:
    """A URL-like name for a bound socket, for logs and ``Server.bound_addresses``."""
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{address}"
    host, port = address[0], address[1]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
