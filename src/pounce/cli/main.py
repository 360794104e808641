"""The ``pounce`` command.

``pounce APP [options]`` serves an application.  Every Uvicorn flag means the
same thing here, so existing command lines keep working; each flag maps one to
one onto a :class:`~pounce.config.ServerConfig` field, and the parser is
generated from the field metadata so flags, help text and ``config show``
cannot disagree.

Subcommands::

    pounce config show [APP] [options] [--json]   effective settings and their sources
    pounce check APP [options]                    import the app, test the address and TLS files
    pounce reload [--pid-file FILE]               ask a running server to reload (SIGHUP)
    pounce --version

Because ``APP`` is positional, the subcommand is recognised only as the very
first argument.  To serve an application whose import string is literally a
subcommand name, put ``--`` first: ``pounce -- config:app``.

Exit codes: 0 success (and Ctrl-C), 1 ``reload`` could not signal the server,
2 usage or configuration error (including options that are not supported
yet), 3 start-up failure (import, bind, TLS, lifespan ...), 141 (as if killed by
SIGPIPE, silently) when whoever reads the output stops reading, e.g. ``| head``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import platform
import signal
import socket
import ssl
import stat
import sys
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn, cast

from pounce._version import __version__
from pounce.config.errors import ConfigError
from pounce.config.model import (
    FIELD_DOCS,
    GROUPS,
    FieldDoc,
    ServerConfig,
    did_you_mean,
    unsupported_options,
)
from pounce.config.sources import LoadedConfig, load_config
from pounce.config.values import BindSpec
from pounce.errors import StartupError
from pounce.importer import ASGI2Adapter, load_app

__all__ = ["build_parser", "main", "version_string"]

PROG: Final = "pounce"
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_STARTUP: Final = 3
#: The reader of our output went away (``pounce config show | head``): no traceback, the
#: status a shell reports for a process ended by SIGPIPE.
EXIT_BROKEN_PIPE: Final = 128 + 13

SUBCOMMANDS: Final = ("config", "check", "reload")

_EPILOG: Final = """\
subcommands:
  pounce config show [APP] [options] [--json]
                        print every effective setting and where it came from
  pounce check APP [options]
                        import APP, test that the address can be bound and TLS
                        files load, then exit 0 (OK) or 3
  pounce reload [--pid-file FILE]
                        send SIGHUP to the server whose pid is in FILE

Durations accept 30, 30s, 250ms, 5m or 1h; sizes accept 1024, 64k, 1m or 1g
(k = 1024); "off" disables optional limits.  Every option can also be set in
pounce.toml (or [tool.pounce] in pyproject.toml) and as POUNCE_<OPTION> in the
environment; command-line flags win.  To serve an app whose name is literally
a subcommand, write: pounce -- config:app
"""


class _Exit(Exception):
    """Stop the current command with an exit status (message already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that reports errors through :class:`_Exit` instead of ``sys.exit``.

    ``main()`` returns its status rather than exiting, so tests (and
    embedding programs) can call it in-process.
    """

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        _error(message + self._suggestion(message))
        raise _Exit(EXIT_USAGE)

    def _suggestion(self, message: str) -> str:
        """A "did you mean" for mistyped flags, the most common CLI mistake."""
        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return ""
        known = [flag for action in self._actions for flag in action.option_strings]
        for word in message[len(prefix) :].split():
            if word.startswith("--"):
                hint = did_you_mean(word.partition("=")[0], known)
                if hint:
                    return hint
        return ""


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _error(message: str) -> None:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)


def _notice(message: str) -> None:
    print(f"{PROG}: notice: {_one_line(message)}", file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and Python flushes it again at exit."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests, embedding)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def version_string() -> str:
    """``pounce X.Y.Z (CPython 3.x.y, free-threaded build)`` or ``(..., GIL build)``."""
    build = "free-threaded" if sysconfig.get_config_var("Py_GIL_DISABLED") else "GIL"
    impl = platform.python_implementation()
    return f"{PROG} {__version__} ({impl} {platform.python_version()}, {build} build)"


# --------------------------------------------------------------------------- parser


def _format_default(doc: FieldDoc) -> str | None:
    """The default as a user would type it (``5s``, ``PROTOCOL_TLS_SERVER``, ``true``)."""
    value = doc.default
    if value is None or value in ((), ""):
        return None
    if isinstance(value, bool):
        if doc.style == "value":
            return "true" if value else "false"
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if doc.metavar == "DURATION" and isinstance(value, float):
        return f"{value:g}s"
    if doc.name == "ssl_version":
        return ssl.PROTOCOL_TLS_SERVER.__class__(value).name
    if doc.name == "ssl_cert_reqs":
        return ssl.VerifyMode(value).name
    return str(value)


def build_parser(prog: str = PROG, *, app_help: str | None = None) -> argparse.ArgumentParser:
    """The option parser shared by serving, ``config show`` and ``check``.

    Defaults are suppressed so the parsed namespace holds only the flags that
    were actually given: those are the "cli" source, and everything else is
    left to the config file, the environment and the defaults.
    """
    parser = _Parser(
        prog=prog,
        usage=f"{prog} [APP] [options]",
        description="Pounce: a production ASGI server.",
        epilog=_EPILOG if prog == PROG else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=version_string())
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    groups["Application"].add_argument(
        "--config",
        metavar="FILE",
        help="read options from this TOML file (default: ./pounce.toml, or "
        "[tool.pounce] in ./pyproject.toml)",
    )
    for name, doc in FIELD_DOCS.items():
        group = groups[doc.group]
        help_text = doc.help
        default = _format_default(doc)
        if default is not None and doc.style != "positional":
            help_text += f" (default: {default})"
        help_text = help_text.replace("%", "%%")
        if doc.style == "positional":
            group.add_argument(
                name, nargs="?", metavar=doc.metavar, help=app_help or help_text
            )
            continue
        assert doc.flag is not None
        if doc.style == "switch":
            group.add_argument(doc.flag, dest=name, action="store_true", help=help_text)
        elif doc.style == "negatable":
            group.add_argument(
                doc.flag, dest=name, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif doc.style == "append":
            group.add_argument(
                doc.flag, dest=name, action="append", metavar=doc.metavar, help=help_text
            )
        else:
            group.add_argument(doc.flag, dest=name, metavar=doc.metavar, help=help_text)
    return parser


def _parse(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[dict[str, Any], str | None]:
    """Parse ``argv``; return ``(cli_values, config_file)``."""
    values = dict(vars(parser.parse_args(list(argv))))
    config_file = values.pop("config", None)
    if values.get("http") == "httptools":
        _notice("--http httptools uses Pounce's built-in parser (--http fast)")
        values["http"] = "fast"
    if values.get("ws") == "wsproto":
        _notice("--ws wsproto uses Pounce's WebSocket engine on websockets (--ws websockets)")
        values["ws"] = "websockets"
    elif values.get("ws") == "websockets-sansio":
        values["ws"] = "websockets"  # the engine is websockets' sans-I/O protocol already
    return values, config_file


def _load(argv: Sequence[str], prog: str, **extra: Any) -> tuple[LoadedConfig, dict[str, Any]]:
    parser = build_parser(prog)
    for flag, kwargs in extra.items():
        parser.add_argument(flag, **kwargs)
    values, config_file = _parse(parser, argv)
    extras = {key: values.pop(key) for key in list(values) if key not in FIELD_DOCS}
    return load_config(values, config_file=config_file), extras


def _require_app(config: ServerConfig, prog: str) -> str:
    if config.app is None:
        raise ConfigError(
            f"no application given; run '{prog} module:attribute' (e.g. '{prog} main:app') "
            "or set app in pounce.toml"
        )
    return config.app


def _check_supported(loaded: LoadedConfig) -> None:
    flags = unsupported_options(loaded.config)
    if not flags:
        return
    by_flag = {doc.flag: name for name, doc in FIELD_DOCS.items()}
    described = []
    for flag in flags:
        source = loaded.source_of(by_flag.get(flag, ""))
        described.append(flag if source.startswith("cli") else f"{flag} (from {source})")
    raise ConfigError("not yet supported: " + ", ".join(described))


# --------------------------------------------------------------------------- commands


def _serve(argv: Sequence[str]) -> int:
    loaded, _ = _load(argv, PROG)
    _require_app(loaded.config, PROG)
    _check_supported(loaded)
    try:
        server_main = importlib.import_module("pounce.main")
    except ModuleNotFoundError as exc:
        if exc.name != "pounce.main":
            raise
        raise StartupError(
            "this installation of Pounce cannot serve yet (pounce.main is missing); "
            "reinstall pounce"
        ) from None
    run = cast(Callable[..., None], server_main.run)
    run(config=loaded.config)
    return EXIT_OK


def _format_value(name: str, value: object) -> str:
    if name == "ssl_keyfile_password" and value is not None:
        return "********"
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if name == "headers":
        return ", ".join(f"{k}: {v}" for k, v in cast(tuple[tuple[str, str], ...], value))
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else "-"
    if value == "":
        return '""'
    return str(value)


def _json_value(name: str, value: object) -> object:
    if name == "ssl_keyfile_password" and value is not None:
        return "********"
    if isinstance(value, tuple):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value


def _config_show(argv: Sequence[str]) -> int:
    if not argv or argv[0] != "show":
        _error(f"usage: {PROG} config show [APP] [options] [--json]")
        return EXIT_USAGE
    loaded, extras = _load(
        argv[1:],
        f"{PROG} config show",
        **{"--json": {"action": "store_true", "dest": "json",
                      "help": "print JSON: {option: {value, source}}"}},
    )
    config = loaded.config
    if extras.get("json"):
        data = {
            name: {"value": _json_value(name, getattr(config, name)),
                   "source": loaded.source_of(name)}
            for name in FIELD_DOCS
        }
        print(json.dumps(data, indent=2))
        return EXIT_OK
    rows = [("OPTION", "VALUE", "SOURCE")]
    rows += [
        (name, _format_value(name, getattr(config, name)), loaded.source_of(name))
        for name in FIELD_DOCS
    ]
    width_name = max(len(r[0]) for r in rows)
    width_value = min(max(len(r[1]) for r in rows), 48)
    for name, value, source in rows:
        print(f"{name:<{width_name}}  {value:<{width_value}}  {source}".rstrip())
    unsupported = unsupported_options(config)
    if unsupported:
        print(f"\nnote: not yet supported, serving would fail: {', '.join(unsupported)}")
    return EXIT_OK


_BIND_HINTS: Final = {
    errno.EADDRINUSE: "another process is listening there; stop it or choose another port",
    errno.EACCES: "permission denied; ports below 1024 need privileges -- use a higher port",
    errno.EADDRNOTAVAIL: "this machine has no such address; use 0.0.0.0, :: or one of its "
    "addresses",
}


def check_bind(spec: BindSpec) -> None:
    """Bind (and immediately close) ``spec`` to prove the server could listen there."""
    if spec.kind == "fd":
        assert spec.fd is not None
        try:
            mode = os.fstat(spec.fd).st_mode
        except OSError:
            raise StartupError(
                f"cannot use {spec}: file descriptor {spec.fd} is not open; pass the "
                "descriptor of a listening socket inherited from the parent process"
            ) from None
        if not stat.S_ISSOCK(mode):
            raise StartupError(f"cannot use {spec}: file descriptor {spec.fd} is not a socket")
        return
    if spec.kind == "unix":
        assert spec.path is not None
        path = Path(spec.path)
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise StartupError(f"cannot bind {spec}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise StartupError(f"cannot bind {spec}: directory {parent} is not writable")
        if path.exists():
            if not stat.S_ISSOCK(path.stat().st_mode):
                raise StartupError(
                    f"cannot bind {spec}: {path} exists and is not a socket; remove it "
                    "or choose another path"
                )
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(path))
                except OSError:
                    return  # stale socket file: nothing is listening
            raise StartupError(
                f"cannot bind {spec}: a server is already listening on {path}; stop it "
                "or choose another path"
            )
        return
    assert spec.host is not None and spec.port is not None
    try:
        infos = socket.getaddrinfo(
            spec.host, spec.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(
            f"cannot bind {spec}: cannot resolve {spec.host!r} ({exc.strerror}); "
            "use an IP address or a resolvable host name"
        ) from None
    family, kind, proto, _, sockaddr = infos[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            if os.name != "nt":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
    except OSError as exc:
        hint = _BIND_HINTS.get(exc.errno or 0, exc.strerror or str(exc))
        raise StartupError(f"cannot bind {spec}: {hint}") from None


def check_tls(config: ServerConfig) -> None:
    """Build the TLS context exactly as every worker will, so mistakes surface before start-up."""
    if config.ssl_certfile is None:
        return
    from pounce.transport.tls import create_ssl_context

    create_ssl_context(config)


def _check(argv: Sequence[str]) -> int:
    loaded, _ = _load(argv, f"{PROG} check")
    config = loaded.config
    app_name = _require_app(config, f"{PROG} check")
    try:
        app = load_app(config)
        for spec in config.bind_specs:
            check_bind(spec)
        check_tls(config)
        from pounce.protocols.http2 import check_available

        check_available(config)
    except ConfigError:
        raise
    except StartupError as exc:
        _error(exc.message)  # one line: check reports, it does not debug
        return EXIT_STARTUP
    _check_supported(loaded)
    kind = "asgi2, adapted" if isinstance(app, ASGI2Adapter) else "asgi3"
    addresses = ", ".join(str(spec) for spec in config.bind_specs)
    tls = "TLS on" if config.ssl_enabled else "TLS off"
    from pounce.protocols.websocket import describe_support, ignored_options

    for flag in ignored_options(config):
        _notice(f"{flag} has no effect: WebSocket support is off")
    from pounce.protocols.http2 import describe_protocols

    print(
        f"OK {app_name} ({kind}); can listen on {addresses}; {tls}; "
        f"{describe_protocols(config)}; {describe_support(config)}"
    )
    return EXIT_OK


def _reload(argv: Sequence[str]) -> int:
    parser = _Parser(
        prog=f"{PROG} reload",
        description="Ask a running Pounce server to reload its workers (sends SIGHUP).",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--pid-file", metavar="FILE",
        help="the file the server was started with --pid-file (default: pid_file from "
        "the config file or POUNCE_PID_FILE)",
    )
    parser.add_argument("--config", metavar="FILE", help="read pid_file from this TOML file")
    args = parser.parse_args(list(argv))
    pid_file: str | None = args.pid_file
    if pid_file is None:
        pid_file = load_config({}, config_file=args.config).config.pid_file
    if pid_file is None:
        _error("no pid file: pass --pid-file FILE, the file the server was started with")
        return EXIT_USAGE
    if not hasattr(signal, "SIGHUP"):
        _error("reload needs SIGHUP, which this platform does not have")
        return EXIT_FAILURE
    try:
        text = Path(pid_file).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        _error(
            f"pid file {pid_file!r} does not exist; is the server running with "
            f"--pid-file {pid_file}?"
        )
        return EXIT_FAILURE
    except (OSError, UnicodeDecodeError) as exc:
        _error(f"cannot read pid file {pid_file!r}: {exc}")
        return EXIT_FAILURE
    if not text.isdigit() or int(text) <= 0:
        _error(f"pid file {pid_file!r} does not contain a process id (found {text[:40]!r})")
        return EXIT_FAILURE
    pid = int(text)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        _error(
            f"no process {pid} (from {pid_file}) is running; the server has stopped -- "
            "start it again, or delete the stale pid file"
        )
        return EXIT_FAILURE
    except PermissionError:
        _error(f"not allowed to signal process {pid}; run as the user that runs the server")
        return EXIT_FAILURE
    print(f"sent SIGHUP to pounce (pid {pid})")
    return EXIT_OK


_COMMANDS: Final[dict[str, Callable[[Sequence[str]], int]]] = {
    "config": _config_show,
    "check": _check,
    "reload": _reload,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pounce`` command and return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        command: Callable[[Sequence[str]], int] = _serve
        args = args[1:]
    elif args and args[0] in _COMMANDS:
        command = _COMMANDS[args[0]]
        args = args[1:]
    else:
        command = _serve
    try:
        code = command(args)
        # Inside the try: a reader that went away (``pounce config show | head``) must
        # surface here, not as an "Exception ignored" when the interpreter flushes at exit.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except _Exit as exc:
        return exc.code
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except StartupError as exc:
        if exc.details:
            print(exc.details, file=sys.stderr)
        _error(exc.message)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        return EXIT_OK
