"""The ``pounce`` command, run in-process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from pounce.cli.main import main
from pounce.config import FIELD_DOCS, GROUPS, ConfigError, ServerConfig
from pounce.errors import StartupError

GOOD_APP = "async def app(scope, receive, send):\n    pass\n"


class FakeRun:
    """Stands in for ``pounce.main.run`` so serving tests never open sockets."""

    def __init__(self) -> None:
        self.configs: list[ServerConfig] = []
        self.effect: Callable[[], None] | None = None

    def __call__(self, app: Any = None, *, config: ServerConfig | None = None, **kw: Any) -> None:
        assert config is not None
        self.configs.append(config)
        if self.effect is not None:
            self.effect()

    @property
    def config(self) -> ServerConfig:
        assert len(self.configs) == 1
        return self.configs[0]


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    run = FakeRun()
    module = types.ModuleType("pounce.main")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pounce.main", module)
    return run


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def show_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run_cli(capsys, "config", "show", "--json", *argv)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


# --------------------------------------------------------------------------- flags

# (argv, option, expected JSON value).  Options a flag depends on are given too.
FLAG_TABLE: list[tuple[list[str], str, Any]] = [
    # Uvicorn's flags
    (["--host", "0.0.0.0"], "host", "0.0.0.0"),
    (["--port", "9000"], "port", 9000),
    (["--uds", "/tmp/pounce.sock"], "uds", "/tmp/pounce.sock"),
    (["--fd", "3"], "fd", 3),
    (["--app-dir", "src"], "app_dir", "src"),
    (["--factory"], "factory", True),
    (["--env-file", "app.env"], "env_file", "app.env"),
    (["--log-level", "debug"], "log_level", "debug"),
    (["--log-level", "TRACE"], "log_level", "trace"),
    (["--log-config", "log.json"], "log_config", "log.json"),
    (["--access-log"], "access_log", True),
    (["--no-access-log"], "access_log", False),
    (["--use-colors"], "use_colors", True),
    (["--no-use-colors"], "use_colors", False),
    (["--proxy-headers"], "proxy_headers", True),
    (["--no-proxy-headers"], "proxy_headers", False),
    (["--forwarded-allow-ips", "10.0.0.1,10.0.0.0/8"], "forwarded_allow_ips",
     ["10.0.0.1", "10.0.0.0/8"]),
    (["--forwarded-allow-ips", "*"], "forwarded_allow_ips", ["*"]),
    (["--root-path", "/api"], "root_path", "/api"),
    (["--limit-concurrency", "10"], "limit_concurrency", 10),
    (["--limit-max-requests", "100"], "limit_max_requests", 100),
    (["--backlog", "64"], "backlog", 64),
    (["--timeout-keep-alive", "7"], "timeout_keep_alive", 7.0),
    (["--timeout-graceful-shutdown", "3"], "timeout_graceful_shutdown", 3.0),
    (["--header", "X-A: 1", "--header", "X-B:2"], "headers", [["X-A", "1"], ["X-B", "2"]]),
    (["--server-header"], "server_header", True),
    (["--no-server-header"], "server_header", False),
    (["--date-header"], "date_header", True),
    (["--no-date-header"], "date_header", False),
    (["--health-path", "/healthz"], "health_path", "/healthz"),
    (["--ready-path", "/readyz"], "ready_path", "/readyz"),
    (["--request-id"], "request_id", True),
    (["--request-id-header", "X-Correlation-ID"], "request_id_header", "x-correlation-id"),
    (["--access-log-health"], "access_log_health", True),
    # Metrics
    (["--metrics"], "metrics", True),
    (["--metrics", "--metrics-path", "/prom"], "metrics_path", "/prom"),
    (["--metrics", "--metrics-bind", "127.0.0.1:9100"], "metrics_bind", "127.0.0.1:9100"),
    # --rate-limit (docs/rate-limiting.md)
    (["--rate-limit", "100/s"], "rate_limit", "100/s"),
    (["--rate-limit-burst", "20"], "rate_limit_burst", 20),
    (["--rate-limit-ipv6-prefix", "56"], "rate_limit_ipv6_prefix", 56),
    (["--rate-limit-max-clients", "1000"], "rate_limit_max_clients", 1000),
    (["--rate-limit-exempt", "/static/", "--rate-limit-exempt", "/docs"], "rate_limit_exempt",
     ["/static/", "/docs"]),
    (["--h11-max-incomplete-event-size", "16384"], "h11_max_incomplete_event_size", 16384),
    (["--http", "h11"], "http", "h11"),
    (["--http", "auto"], "http", "auto"),
    (["--http", "h2"], "http", "h2"),
    (["--h2-max-concurrent-streams", "50"], "h2_max_concurrent_streams", 50),
    (["--h2-initial-window-size", "1m"], "h2_initial_window_size", 1048576),
    (["--h2-max-frame-size", "32k"], "h2_max_frame_size", 32768),
    (["--h2-max-header-list-size", "16k"], "h2_max_header_list_size", 16384),
    (["--h2-max-requests", "off"], "h2_max_requests", None),
    (["--interface", "asgi2"], "interface", "asgi2"),
    (["--reset-contextvars"], "reset_contextvars", True),
    (["--loop", "asyncio"], "loop", "asyncio"),
    (["--lifespan", "on"], "lifespan", "on"),
    (["--lifespan", "off"], "lifespan", "off"),
    (["--workers", "4"], "workers", 4),
    (["--workers", "auto"], "workers", 0),
    (["--timeout-worker-healthcheck", "5"], "timeout_worker_healthcheck", 5.0),
    (["--limit-max-requests", "9", "--limit-max-requests-jitter", "5"],
     "limit_max_requests_jitter", 5),
    (["--reload"], "reload", True),
    (["--reload", "--reload-dir", "a", "--reload-dir", "b"], "reload_dirs", ["a", "b"]),
    (["--reload", "--reload-include", "*.html"], "reload_includes", ["*.html"]),
    (["--reload", "--reload-exclude", "*.tmp"], "reload_excludes", ["*.tmp"]),
    (["--reload-delay", "1"], "reload_delay", 1.0),
    (["--ssl-certfile", "c.pem", "--ssl-keyfile", "k.pem"], "ssl_keyfile", "k.pem"),
    (["--ssl-certfile", "c.pem"], "ssl_certfile", "c.pem"),
    (["--ssl-certfile", "c.pem", "--ssl-keyfile-password", "pw"], "ssl_keyfile_password",
     "********"),
    (["--ssl-certfile", "c.pem", "--ssl-version", "2"], "ssl_version", 2),
    (["--ssl-certfile", "c.pem", "--ssl-ca-certs", "ca.pem", "--ssl-cert-reqs", "2"],
     "ssl_cert_reqs", 2),
    (["--ssl-certfile", "c.pem", "--ssl-ca-certs", "ca.pem"], "ssl_ca_certs", "ca.pem"),
    (["--ssl-certfile", "c.pem", "--ssl-ciphers", "HIGH"], "ssl_ciphers", "HIGH"),
    (["--ssl-certfile", "c.pem", "--timeout-ssl-handshake", "2s"], "timeout_ssl_handshake", 2.0),
    (["--ws", "none"], "ws", "none"),
    (["--ws", "wsproto"], "ws", "websockets"),
    (["--ws", "websockets-sansio"], "ws", "websockets"),
    (["--ws", "websockets"], "ws", "websockets"),
    (["--ws-max-size", "1000"], "ws_max_size", 1000),
    (["--ws-max-queue", "4"], "ws_max_queue", 4),
    (["--ws-ping-interval", "5"], "ws_ping_interval", 5.0),
    (["--ws-ping-timeout", "5"], "ws_ping_timeout", 5.0),
    (["--ws-per-message-deflate", "false"], "ws_per_message_deflate", False),
    (["--ws-per-message-deflate", "true"], "ws_per_message_deflate", True),
    # Pounce's own flags
    (["--bind", "0.0.0.0:80", "--bind", "unix:/tmp/x.sock"], "bind",
     ["0.0.0.0:80", "unix:/tmp/x.sock"]),
    (["--access-log-format", "%(h)s %(r)s"], "access_log_format", "%(h)s %(r)s"),
    (["--log-format", "json"], "log_format", "json"),
    (["--timeout-request-header", "5s"], "timeout_request_header", 5.0),
    (["--timeout-request-body", "1m"], "timeout_request_body", 60.0),
    (["--min-request-body-rate", "1k"], "min_request_body_rate", 1024),
    (["--timeout-write", "250ms"], "timeout_write", 0.25),
    (["--timeout-startup", "2m"], "timeout_startup", 120.0),
    (["--limit-request-line", "4k"], "limit_request_line", 4096),
    (["--limit-request-header-size", "32k"], "limit_request_header_size", 32768),
    (["--limit-request-fields", "50"], "limit_request_fields", 50),
    (["--limit-request-body", "1m"], "limit_request_body", 1048576),
    (["--limit-request-body", "off"], "limit_request_body", None),
    (["--limit-max-rss", "1g"], "limit_max_rss", 1024**3),
    (["--no-gc-freeze"], "gc_freeze", False),
    (["--gc-freeze"], "gc_freeze", True),
    (["--allow-bare-lf"], "allow_bare_lf", True),
    (["--server-timing"], "server_timing", True),
    (["--max-concurrency", "8"], "max_concurrency", 8),
    (["--max-queue", "0"], "max_queue", 0),
    (["--queue-timeout", "500ms"], "queue_timeout", 0.5),
    (["--worker-type", "thread"], "worker_type", "thread"),
    (["--accept", "reuseport"], "accept", "reuseport"),
    (["--pid-file", "pounce.pid"], "pid_file", "pounce.pid"),
    (["--no-compression"], "compression", False),
    (["--compression"], "compression", True),
    (["--compression-min-size", "1k"], "compression_min_size", 1024),
    (["--compression-level-gzip", "9"], "compression_level_gzip", 9),
    (["--compression-level-zstd", "12"], "compression_level_zstd", 12),
    (["--compression-type", "application/x-yaml", "--compression-type", "Text/X-Custom"],
     "compression_types", ["application/x-yaml", "text/x-custom"]),
    # static files (directories that exist wherever the test runs)
    (["--static", "/static/=.", "--static", "/docs=.."], "static",
     [["/static", "."], ["/docs", ".."]]),
    (["--static-cache-control", "public, max-age=60"], "static_cache_control",
     "public, max-age=60"),
    # suffix forms on Uvicorn flags
    (["--timeout-keep-alive", "2m"], "timeout_keep_alive", 120.0),
    (["--ws-max-size", "16m"], "ws_max_size", 16 * 1024 * 1024),
    (["--ws-ping-interval", "off"], "ws_ping_interval", None),
]


@pytest.fixture
def support_files(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("")
    (tmp_path / "log.json").write_text("{}")


@pytest.mark.usefixtures("support_files")
@pytest.mark.parametrize(("argv", "option", "expected"), FLAG_TABLE,
                         ids=[" ".join(a) for a, _, _ in FLAG_TABLE])
def test_flag_maps_to_field(
    capsys: pytest.CaptureFixture[str], argv: list[str], option: str, expected: Any
) -> None:
    data = show_json(capsys, *argv)
    assert data[option]["value"] == expected
    assert data[option]["source"].startswith("cli --")


def test_every_option_has_a_flag_in_the_table() -> None:
    covered = {option for _, option, _ in FLAG_TABLE} | {"app"}
    assert set(FIELD_DOCS) == covered


def test_only_given_flags_count_as_cli(capsys: pytest.CaptureFixture[str]) -> None:
    data = show_json(capsys)
    assert {entry["source"] for entry in data.values()} == {"default"}


def test_app_positional_and_source(capsys: pytest.CaptureFixture[str]) -> None:
    data = show_json(capsys, "main:app", "--port", "1")
    assert data["app"] == {"value": "main:app", "source": "cli APP"}


# --------------------------------------------------------------------------- help & version


def test_help_groups_flags_by_topic(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    positions = [out.index(f"\n{group}:\n") for group in GROUPS]
    assert positions == sorted(positions)
    tls = out[out.index("\nTLS:\n") : out.index("\nWebSocket:\n")]
    assert "--ssl-certfile" in tls
    timeouts = out[out.index("\nTimeouts:\n") : out.index("\nProxy:\n")]
    assert "--timeout-keep-alive" in timeouts
    assert "pounce -- config:app" in out  # the escape for subcommand-named apps
    assert "(default: 8000)" in " ".join(out.split())


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert re.fullmatch(
        r"pounce \d+\.\d+\.\d+\S* \(\w+ \d+\.\d+\.\d+\S*, (free-threaded|GIL) build\)\n", out
    )


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pounce", "--version"],
        capture_output=True, text=True, check=False, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pounce ")


# --------------------------------------------------------------------------- serving


def test_serve_calls_run_with_config(capsys: pytest.CaptureFixture[str], fake_run: FakeRun) -> None:
    code, _, err = run_cli(capsys, "main:app", "--port", "9001", "--timeout-keep-alive", "1m")
    assert (code, err) == (0, "")
    assert fake_run.config.app == "main:app"
    assert fake_run.config.port == 9001
    assert fake_run.config.timeout_keep_alive == 60.0


def test_httptools_maps_to_fast_with_notice(
    capsys: pytest.CaptureFixture[str], fake_run: FakeRun
) -> None:
    code, _, err = run_cli(capsys, "main:app", "--http", "httptools")
    assert code == 0
    assert fake_run.config.http == "fast"
    assert err.count("\n") == 1
    assert err.startswith("pounce: notice: --http httptools")


def test_ws_wsproto_maps_to_websockets_with_notice(
    capsys: pytest.CaptureFixture[str], fake_run: FakeRun
) -> None:
    code, _, err = run_cli(capsys, "main:app", "--ws", "wsproto")
    assert code == 0
    assert fake_run.config.ws == "websockets"
    assert err.count("\n") == 1
    assert err.startswith("pounce: notice: --ws wsproto")


def test_reload_is_served(capsys: pytest.CaptureFixture[str], fake_run: FakeRun) -> None:
    code, _, _ = run_cli(capsys, "main:app", "--reload", "--reload-dir", "src")
    assert code == 0
    assert fake_run.config.reload is True
    assert fake_run.config.reload_dirs == ("src",)


def test_bad_values_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], fake_run: FakeRun
) -> None:
    code, _, err = run_cli(capsys, "main:app", "--port", "http")
    assert code == 2
    assert err == (
        "pounce: error: invalid port 'http' (from cli --port): expected an integer from 0 "
        "to 65535\n"
    )


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str], fake_run: FakeRun) -> None:
    code, _, err = run_cli(capsys, "main:app", "--prot", "1")
    assert code == 2
    assert "pounce: error: unrecognized arguments: --prot 1" in err


def test_no_abbreviations(capsys: pytest.CaptureFixture[str], fake_run: FakeRun) -> None:
    code, _, _ = run_cli(capsys, "main:app", "--timeout-keep", "1")
    assert code == 2


def test_missing_app(capsys: pytest.CaptureFixture[str], fake_run: FakeRun) -> None:
    code, _, err = run_cli(capsys, "--port", "1")
    assert code == 2
    assert "no application given" in err


def test_app_from_config_file(
    capsys: pytest.CaptureFixture[str], fake_run: FakeRun, tmp_path: Path
) -> None:
    (tmp_path / "pounce.toml").write_text('app = "main:app"\nport = 7000\n')
    assert run_cli(capsys, "--port", "7001")[0] == 0
    assert (fake_run.config.app, fake_run.config.port) == ("main:app", 7001)


def test_explicit_config_flag(
    capsys: pytest.CaptureFixture[str], fake_run: FakeRun, tmp_path: Path
) -> None:
    (tmp_path / "prod.toml").write_text("backlog = 12\n")
    assert run_cli(capsys, "main:app", "--config", "prod.toml")[0] == 0
    assert fake_run.config.backlog == 12
    code, _, err = run_cli(capsys, "main:app", "--config", "missing.toml")
    assert code == 2
    assert "config file 'missing.toml' not found" in err


def test_double_dash_serves_app_named_like_a_subcommand(
    capsys: pytest.CaptureFixture[str], fake_run: FakeRun
) -> None:
    code, _, _ = run_cli(capsys, "--", "config:app", "--port", "1234")
    assert code == 0
    assert fake_run.config.app == "config:app"
    assert fake_run.config.port == 1234


def test_startup_error_exits_3_with_details(
    capsys: pytest.CaptureFixture[str], fake_run: FakeRun
) -> None:
    def fail() -> None:
        raise StartupError("cannot bind 127.0.0.1:8000: in use", details="Traceback: here")

    fake_run.effect = fail
    code, _, err = run_cli(capsys, "main:app")
    assert code == 3
    assert err == "Traceback: here\npounce: error: cannot bind 127.0.0.1:8000: in use\n"


def test_config_error_from_run_exits_2(
    capsys: pytest.CaptureFixture[str], fake_run: FakeRun
) -> None:
    def fail() -> None:
        raise ConfigError("bad\nthing")

    fake_run.effect = fail
    code, _, err = run_cli(capsys, "main:app")
    assert (code, err) == (2, "pounce: error: bad thing\n")


def test_keyboard_interrupt_exits_0_quietly(
    capsys: pytest.CaptureFixture[str], fake_run: FakeRun
) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    fake_run.effect = interrupt
    assert run_cli(capsys, "main:app") == (0, "", "")


# --------------------------------------------------------------------------- config show


def test_config_show_table(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                           tmp_path: Path) -> None:
    (tmp_path / "pounce.toml").write_text("backlog = 10\n")
    monkeypatch.setenv("POUNCE_LOG_LEVEL", "debug")
    code, out, _ = run_cli(
        capsys, "config", "show", "main:app", "--port", "9000",
        "--ssl-certfile", "c.pem", "--ssl-keyfile-password", "hunter2",
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["OPTION", "VALUE", "SOURCE"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if line and " " in line}
    assert rows["port"][1:] == ["9000", "cli", "--port"]
    assert rows["backlog"][1:] == ["10", "pounce.toml"]
    assert rows["log_level"][1:] == ["debug", "env", "POUNCE_LOG_LEVEL"]
    assert rows["app"][1:] == ["main:app", "cli", "APP"]
    assert rows["host"][1:] == ["127.0.0.1", "default"]
    assert "hunter2" not in out
    # values and sources line up in columns
    port_line = next(line for line in lines if line.startswith("port "))
    host_line = next(line for line in lines if line.startswith("host "))
    assert port_line.index("9000") == host_line.index("127.0.0.1") == lines[0].index("VALUE")
    assert port_line.index("cli --port") == host_line.index("default") == lines[0].index("SOURCE")
    assert "not yet supported" not in out  # TLS is served


def test_config_show_requires_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "config")
    assert code == 2
    assert "pounce config show" in err


def test_config_show_reports_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "config", "show", "--backlog", "0")
    assert code == 2
    assert "invalid backlog '0' (from cli --backlog)" in err


# --------------------------------------------------------------------------- check


@pytest.fixture
def good_app(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "check_good_app.py").write_text(GOOD_APP)
    yield "check_good_app:app"
    sys.modules.pop("check_good_app", None)


def test_check_ok(capsys: pytest.CaptureFixture[str], good_app: str) -> None:
    code, out, err = run_cli(capsys, "check", good_app, "--port", "0")
    assert (code, err) == (0, "")
    assert out.startswith(f"OK {good_app} (asgi3); can listen on 127.0.0.1:0; TLS off; ")
    assert out.endswith("; WebSocket on (websockets " + version("websockets") + " sans-I/O)\n")
    assert "; protocols: HTTP/1.1 (built-in parser) and HTTP/2 (h2 " in out


def test_check_says_websocket_off_and_flags_without_effect(
    capsys: pytest.CaptureFixture[str], good_app: str
) -> None:
    code, out, err = run_cli(
        capsys, "check", good_app, "--port", "0", "--ws", "none", "--ws-max-size", "1k"
    )
    assert code == 0
    assert out.endswith("; WebSocket off (--ws none)\n")
    assert err == "pounce: notice: --ws-max-size has no effect: WebSocket support is off\n"


def test_check_broken_app(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "check_broken_app.py").write_text("import no_such_dependency_here\n")
    try:
        code, out, err = run_cli(capsys, "check", "check_broken_app:app", "--port", "0")
    finally:
        sys.modules.pop("check_broken_app", None)
    assert code == 3
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("pounce: error: importing 'check_broken_app:app' raised ")
    assert "no_such_dependency_here" in err


def test_check_missing_module(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "check", "check_nowhere:app", "--port", "0")
    assert code == 3
    assert "no module named 'check_nowhere'" in err


def test_check_port_in_use(capsys: pytest.CaptureFixture[str], good_app: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(capsys, "check", good_app, "--port", str(port))
    assert code == 3
    assert f"cannot bind 127.0.0.1:{port}: another process is listening there" in err


def test_check_unix_socket_path(capsys: pytest.CaptureFixture[str], good_app: str,
                                tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "check", good_app, "--uds", str(tmp_path / "p.sock"))
    assert code == 0
    assert f"unix:{tmp_path / 'p.sock'}" in out
    code, _, err = run_cli(capsys, "check", good_app, "--uds", str(tmp_path / "no" / "p.sock"))
    assert code == 3
    assert "does not exist" in err
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(capsys, "check", good_app, "--uds", str(tmp_path / "file"))
    assert (code, "is not a socket" in err) == (3, True)


def test_check_bad_fd(capsys: pytest.CaptureFixture[str], good_app: str) -> None:
    read_fd, write_fd = os.pipe()
    try:
        code, _, err = run_cli(capsys, "check", good_app, "--fd", str(read_fd))
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert code == 3
    assert "is not a socket" in err


def test_check_unreadable_tls_file(capsys: pytest.CaptureFixture[str], good_app: str) -> None:
    code, _, err = run_cli(capsys, "check", good_app, "--port", "0",
                           "--ssl-certfile", "missing.pem")
    assert code == 3
    assert "cannot read --ssl-certfile 'missing.pem'" in err


def test_check_invalid_tls_file(capsys: pytest.CaptureFixture[str], good_app: str,
                                tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    code, _, err = run_cli(capsys, "check", good_app, "--port", "0",
                           "--ssl-certfile", "cert.pem")
    assert code == 3
    assert "cannot load the TLS certificate" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_check_valid_tls(
    capsys: pytest.CaptureFixture[str], good_app: str, tmp_path: Path
) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "cert.pem"],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )
    code, _, err = run_cli(capsys, "check", good_app, "--port", "0",
                           "--ssl-certfile", "cert.pem", "--ssl-keyfile", "key.pem",
                           "--ssl-ciphers", "NO-SUCH-CIPHER")
    assert code == 3
    assert "selects no cipher" in err
    code, _, err = run_cli(capsys, "check", good_app, "--port", "0",
                           "--ssl-certfile", "cert.pem", "--ssl-keyfile", "key.pem")
    assert code == 0, err


def test_check_without_app(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "check")
    assert code == 2
    assert "no application given" in err


# --------------------------------------------------------------------------- reload


def test_reload_missing_pid_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "reload", "--pid-file", "missing.pid")
    assert code == 1
    assert err == (
        "pounce: error: pid file 'missing.pid' does not exist; is the server running with "
        "--pid-file missing.pid?\n"
    )


def test_reload_without_pid_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "reload")
    assert code == 2
    assert "--pid-file" in err


def test_reload_garbage_pid_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "p.pid").write_text("hello\n")
    code, _, err = run_cli(capsys, "reload", "--pid-file", "p.pid")
    assert code == 1
    assert "does not contain a process id" in err


def test_reload_dead_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "p.pid").write_text("999999999\n")
    code, _, err = run_cli(capsys, "reload", "--pid-file", "p.pid")
    assert code == 1
    assert "no process 999999999" in err


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="needs SIGHUP")
def test_reload_sends_sighup(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: received.append(signum))
    try:
        (tmp_path / "p.pid").write_text(f"{os.getpid()}\n")
        code, out, _ = run_cli(capsys, "reload", "--pid-file", "p.pid")
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert code == 0
    assert out == f"sent SIGHUP to pounce (pid {os.getpid()})\n"
    assert received == [signal.SIGHUP]


def test_reload_reads_pid_file_from_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "pounce.toml").write_text('pid-file = "from-config.pid"\n')
    code, _, err = run_cli(capsys, "reload")
    assert code == 1
    assert "'from-config.pid' does not exist" in err


def test_mistyped_flag_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["examples:app", "--prot", "9000"]) == 2
    assert "did you mean '--port'" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--json"], []])
def test_config_show_into_a_closed_pipe_exits_quietly(extra: list[str]) -> None:
    """``pounce config show | head``: the reader leaves early; no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: EPIPE for certain
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pounce", "config", "show", *extra],
            stdout=write_end, stderr=subprocess.PIPE, text=True, check=False, timeout=30,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141
