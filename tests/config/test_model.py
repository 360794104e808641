"""ServerConfig: validation, normalisation, derived values, immutability."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import pickle
import ssl
from pathlib import Path
from typing import Any

import pytest

from pounce.config import (
    FIELD_DOCS,
    GROUPS,
    UNSUPPORTED_OPTIONS,
    BindSpec,
    ConfigError,
    ServerConfig,
    unsupported_options,
)
from pounce.config.model import ineffective_reload_options
from pounce.errors import StartupError

# --------------------------------------------------------------------------- defaults


def test_defaults_match_the_contract() -> None:
    c = ServerConfig()
    expected: dict[str, Any] = {
        "app": None, "factory": False, "app_dir": ".", "interface": "auto", "env_file": None,
        "host": "127.0.0.1", "port": 8000, "uds": None, "fd": None, "bind": (),
        "backlog": 2048, "http": "auto", "loop": "auto", "h11_max_incomplete_event_size": None,
        "h2_max_concurrent_streams": 100, "h2_initial_window_size": 262144,
        "h2_max_frame_size": 16384, "h2_max_header_list_size": 65536, "h2_max_requests": 100000,
        "limit_request_line": 8190, "limit_request_header_size": 65536,
        "limit_request_fields": 100, "limit_request_body": None, "allow_bare_lf": False,
        "limit_concurrency": None, "limit_max_requests": None, "limit_max_requests_jitter": 0,
        "limit_max_rss": None, "gc_freeze": True,
        "timeout_keep_alive": 5.0, "timeout_request_header": 10.0,
        "timeout_request_body": 30.0, "min_request_body_rate": 500, "timeout_write": 30.0,
        "timeout_graceful_shutdown": 30.0,
        "timeout_startup": 60.0, "timeout_worker_healthcheck": 30.0, "lifespan": "auto",
        "reset_contextvars": False, "root_path": "", "proxy_headers": True,
        "forwarded_allow_ips": ("127.0.0.1",), "server_header": True, "date_header": True,
        "server_timing": False,
        "headers": (), "log_level": "info", "log_config": None, "access_log": True,
        "access_log_format": None, "log_format": "text", "use_colors": None, "workers": 1,
        "worker_type": "auto", "accept": "auto", "pid_file": None, "reload": False,
        "reload_dirs": (), "reload_includes": (), "reload_excludes": (), "reload_delay": 0.25,
        "ssl_keyfile": None, "ssl_certfile": None, "ssl_keyfile_password": None,
        "ssl_version": ssl.PROTOCOL_TLS_SERVER, "ssl_cert_reqs": ssl.CERT_NONE,
        "ssl_ca_certs": None, "ssl_ciphers": None, "timeout_ssl_handshake": 10.0, "ws": "auto",
        "ws_max_size": 16777216,
        "ws_max_queue": 32, "ws_ping_interval": 20.0, "ws_ping_timeout": 20.0,
        "ws_per_message_deflate": True, "compression": True, "compression_min_size": 500,
        "compression_level_gzip": 6, "compression_level_zstd": 3, "compression_types": (),
        "health_path": None, "ready_path": None,
        "access_log_health": False, "request_id": False, "request_id_header": "x-request-id",
        # Metrics
        "metrics": False, "metrics_path": "/metrics", "metrics_bind": None,
        "static": (), "static_cache_control": "no-cache",
        # --rate-limit
        "rate_limit": None, "rate_limit_burst": None, "rate_limit_ipv6_prefix": 64,
        "rate_limit_max_clients": 65536, "rate_limit_exempt": (),
        "max_concurrency": None, "max_queue": 100, "queue_timeout": 10.0,
    }
    assert set(FIELD_DOCS) == set(expected)
    for name, value in expected.items():
        assert getattr(c, name) == value, name


def test_field_docs_cover_every_field_with_help_and_group() -> None:
    for name, doc in FIELD_DOCS.items():
        assert doc.help, name
        assert doc.group in GROUPS, name
        assert doc.env == "POUNCE_" + name.upper()
        if name != "app":
            assert doc.flag is not None and doc.flag.startswith("--")
    assert FIELD_DOCS["headers"].flag == "--header"
    assert FIELD_DOCS["reload_dirs"].flag == "--reload-dir"
    assert FIELD_DOCS["timeout_keep_alive"].flag == "--timeout-keep-alive"


# --------------------------------------------------------------------------- immutability


def test_config_is_frozen_and_slotted() -> None:
    c = ServerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.port = 1  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        c.timeout_keepalive = 3  # type: ignore[attr-defined]
    assert not hasattr(c, "__dict__")


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        ServerConfig("main:app")  # type: ignore[call-arg]


def test_replace_returns_new_validated_config() -> None:
    c = ServerConfig()
    d = c.replace(port=9000, host="0.0.0.0")
    assert (d.port, d.host) == (9000, "0.0.0.0")
    assert d.bind_specs == (BindSpec(kind="tcp", host="0.0.0.0", port=9000),)
    assert c.port == 8000
    with pytest.raises(ConfigError, match="invalid port"):
        c.replace(port=-1)
    with pytest.raises(ConfigError, match="did you mean 'port'"):
        c.replace(prot=1)


def test_config_is_hashable_and_comparable() -> None:
    assert ServerConfig(port=1) == ServerConfig(port="1")  # type: ignore[arg-type]
    assert hash(ServerConfig()) == hash(ServerConfig())


def test_config_pickles() -> None:
    # Process workers receive the config by pickling.
    c = ServerConfig(headers=(("X-A", "1"),), bind=(":80",))
    assert pickle.loads(pickle.dumps(c)) == c


# --------------------------------------------------------------------------- normalisation


def test_text_values_are_normalised() -> None:
    c = ServerConfig.from_mapping(
        {
            "port": "8001",
            "timeout_keep_alive": "5m",
            "limit_request_body": "1m",
            "workers": "auto",
            "proxy_headers": "no",
            "use_colors": "auto",
            "forwarded_allow_ips": "10.0.0.0/8, 127.0.0.1",
            "headers": ["X-A: 1", ("X-B", "2")],
            "log_level": "WARNING",
            "ws_ping_interval": "off",
            "limit_concurrency": "none",
            "root_path": "/api/",
            "ssl_certfile": "c.pem",
            "ssl_cert_reqs": "CERT_REQUIRED",
            "ssl_ca_certs": "ca.pem",
            "ssl_version": "PROTOCOL_TLS_SERVER",
        }
    )
    assert c.port == 8001
    assert c.timeout_keep_alive == 300.0
    assert c.limit_request_body == 1024 * 1024
    assert c.workers == 0
    assert c.proxy_headers is False
    assert c.use_colors is None
    assert c.forwarded_allow_ips == ("10.0.0.0/8", "127.0.0.1")
    assert c.headers == (("X-A", "1"), ("X-B", "2"))
    assert c.log_level == "warning"
    assert c.ws_ping_interval is None
    assert c.limit_concurrency is None
    assert c.root_path == "/api"
    assert c.ssl_cert_reqs == ssl.CERT_REQUIRED
    assert c.ssl_version == ssl.PROTOCOL_TLS_SERVER


def test_short_ssl_names_and_numbers() -> None:
    tls = {"ssl_certfile": "c", "ssl_ca_certs": "ca"}
    assert ServerConfig(**tls, ssl_cert_reqs="required").ssl_cert_reqs == 2  # type: ignore[arg-type]
    assert ServerConfig(**tls, ssl_cert_reqs="1").ssl_cert_reqs == 1  # type: ignore[arg-type]


# --------------------------------------------------------------------------- validation

BAD_VALUES: list[tuple[str, object, str]] = [
    ("gc_freeze", "sometimes", "expected a boolean"),
    ("port", 70000, "0 to 65535"),
    ("port", -1, "0 to 65535"),
    ("port", True, "0 to 65535"),
    ("port", "http", "0 to 65535"),
    ("host", "", "IP address or host name"),
    ("host", "bad host", "not an IP address or a valid host name"),
    ("backlog", 0, ">= 1"),
    ("fd", -1, ">= 0"),
    ("interface", "wsgi", "ASGI applications only"),
    ("interface", "asgi4", "auto, asgi3, asgi2"),
    ("http", "httptools", "use 'fast'"),
    ("http", "h3", "auto, fast, h11, h2"),
    ("h2_max_concurrent_streams", 0, "integer from 1"),
    ("h2_initial_window_size", "4g", "size from 1 to"),
    ("h2_max_frame_size", "1k", "at least 16384"),
    ("h2_max_header_list_size", "100", "at least 1024"),
    ("h2_max_requests", 0, "integer >= 1"),
    ("loop", "trio", "auto, asyncio, uvloop"),
    ("lifespan", "maybe", "auto, on, off"),
    ("limit_request_line", 0, "at least 1"),
    ("limit_request_line", "8x", "size"),
    ("limit_request_fields", 0, ">= 1"),
    ("limit_request_body", -5, "size"),
    ("limit_concurrency", 0, ">= 1"),
    ("max_concurrency", 0, ">= 1"),
    ("max_queue", -1, ">= 0"),
    ("queue_timeout", 0, "greater than zero"),
    ("limit_max_requests_jitter", -1, ">= 0"),
    ("timeout_keep_alive", -1, "not negative"),
    ("timeout_request_header", 0, "greater than zero"),
    ("timeout_write", "soon", "duration"),
    ("timeout_graceful_shutdown", float("inf"), "finite"),
    ("reload_delay", "x", "duration"),
    ("forwarded_allow_ips", "proxy.local", "not an IP address"),
    ("forwarded_allow_ips", 5, "comma-separated"),
    ("headers", ["no colon"], "NAME:VALUE"),
    ("headers", ["X-A: 1\r\nX-B: 2"], "CR, LF or NUL"),
    ("headers", [("Bad Name", "x")], "HTTP token"),
    ("headers", [(1, 2)], "NAME:VALUE"),
    ("log_level", "verbose", "critical, error, warning, info, debug, trace"),
    ("log_format", "xml", "text, json"),
    ("use_colors", "sometimes", "true, false or auto"),
    ("workers", -1, "auto"),
    ("workers", "many", "auto"),
    ("worker_type", "fiber", "auto, thread, process"),
    ("accept", "magic", "auto, distributor, reuseport"),
    ("ws", "yes", "auto, none, websockets, websockets-sansio, wsproto"),
    ("ws_max_size", 0, "at least 1"),
    ("ws_max_queue", 0, ">= 1"),
    ("ws_ping_interval", 0, "greater than zero"),
    ("ws_per_message_deflate", "maybe", "boolean"),
    ("root_path", "api", "starting with /"),
    # --rate-limit
    ("rate_limit", "100", "100/s, 600/m or 5000/h"),
    ("rate_limit", "10/d", "100/s, 600/m or 5000/h"),
    ("rate_limit", 100, "100/s, 600/m or 5000/h"),
    ("rate_limit_burst", 0, ">= 1"),
    ("rate_limit_ipv6_prefix", 0, "from 1 to 128"),
    ("rate_limit_ipv6_prefix", 129, "from 1 to 128"),
    ("rate_limit_max_clients", 10, "from 64 to"),
    ("rate_limit_exempt", ["static"], "starting with /"),
    ("app", "", "non-empty"),
    ("app_dir", "", "non-empty"),
    ("bind", ["localhost"], "missing port"),
    ("bind", 8000, "comma-separated"),
    ("ssl_ciphers", "", "non-empty"),
    ("timeout_ssl_handshake", 0, "greater than zero"),
    ("access_log", "loud", "boolean"),
    ("min_request_body_rate", 0, "at least 1"),
    ("compression", "maybe", "boolean"),
    ("compression_min_size", "big", "size"),
    ("compression_level_gzip", 0, "from 1 to 9"),
    ("compression_level_zstd", 20, "from 1 to 19"),
    ("compression_types", ["json"], "media type"),
    ("health_path", "healthz", "starting with /"),
    ("ready_path", "/ready?x=1", "no query"),
    ("ready_path", 5, "starting with /"),
    ("access_log_health", "loud", "boolean"),
    ("request_id", "maybe", "boolean"),
    ("request_id_header", "x request id", "HTTP token"),
    ("request_id_header", "", "header name"),
    # Metrics
    ("metrics", "maybe", "boolean"),
    ("metrics_path", "metrics", "starting with /"),
    ("metrics_path", None, "starting with /"),
    ("metrics_bind", "9100", "HOST:PORT"),
    ("metrics_bind", "unix:/tmp/m.sock", "TCP address"),
    ("static", ["/static"], "has no '='"),
    ("static", ["static=src"], "starting with /"),
    ("static", ["/a=src", "/a/=tests"], "given twice"),
    ("static", ["/a="], "names no directory"),
    ("static", [5], "URL_PREFIX=DIRECTORY"),
    ("static", ["/assets=no-such-directory"], "not found"),
    ("static_cache_control", "max-age=60\r\nX: 1", "CR, LF or NUL"),
]


@pytest.mark.parametrize(("option", "value", "message"), BAD_VALUES)
def test_invalid_values_raise_one_config_error(option: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig(**{option: value})  # type: ignore[arg-type]
    err = info.value
    assert err.option == option
    assert message in str(err)
    assert str(err).startswith(f"invalid {option} ")
    assert isinstance(err, ValueError)
    assert isinstance(err, StartupError)


def test_every_field_has_at_least_one_rejection_test() -> None:
    tested = {option for option, _, _ in BAD_VALUES}
    # Free-form strings and booleans accept almost anything; the rest must be covered.
    free_form = {"env_file", "uds", "log_config", "access_log_format", "pid_file",
                 "ssl_keyfile", "ssl_certfile", "ssl_keyfile_password", "ssl_ca_certs",
                 "reload_dirs", "reload_includes", "reload_excludes", "factory",
                 "reset_contextvars", "allow_bare_lf", "server_header", "date_header",
                 "server_timing",
                 "proxy_headers", "reload", "ssl_version", "ssl_cert_reqs",
                 "h11_max_incomplete_event_size", "limit_max_requests", "limit_max_rss",
                 "limit_request_header_size", "timeout_request_body", "timeout_startup",
                 "timeout_worker_healthcheck", "ws_ping_timeout"}
    assert set(FIELD_DOCS) - tested - free_form == set()


def test_password_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig(ssl_keyfile_password="")
    assert "********" in str(info.value)


def test_long_values_are_truncated_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig(host="x" * 500 + " y")
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"uds": "/tmp/s", "fd": 3}, "uds and fd both given"),
        ({"bind": ["unix:/tmp/s"], "uds": "/tmp/s"}, "bind replaces uds and fd"),
        ({"bind": [":80"], "port": 81}, "bind replaces host and port"),
        ({"bind": [":80"], "host": "0.0.0.0"}, "bind replaces host and port"),
        ({"ssl_keyfile": "k.pem"}, "without ssl_certfile"),
        ({"ssl_keyfile_password": "pw"}, "without ssl_certfile"),
        ({"ssl_ca_certs": "ca.pem"}, "without ssl_certfile"),
        ({"ssl_cert_reqs": 2}, "without ssl_certfile"),
        ({"ssl_ciphers": "HIGH"}, "without ssl_certfile"),
        ({"timeout_ssl_handshake": 5}, "without ssl_certfile"),
        ({"ssl_certfile": "c.pem", "ssl_cert_reqs": 2}, "without CA certificates"),
        ({"ssl_certfile": "c.pem", "ssl_cert_reqs": "optional"}, "add --ssl-ca-certs"),
        ({"limit_max_requests_jitter": 5}, "without limit_max_requests"),
        ({"health_path": "/h", "ready_path": "/h"}, "health_path and ready_path are the same"),
        ({"metrics_path": "/m"}, "without metrics"),
        ({"metrics_bind": "127.0.0.1:9100"}, "without metrics"),
        ({"metrics": True, "health_path": "/metrics"}, "also a health probe path"),
    ],
)
def test_conflicting_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig(**kwargs)


def test_reload_options_without_reload_are_not_an_error() -> None:
    # Uvicorn only warns about these; command lines copied from it must keep working.
    config = ServerConfig(
        reload_dirs=["src"], reload_includes=["*.html"], reload_excludes=["*.tmp"],
        reload_delay=1.0,
    )
    assert ineffective_reload_options(config) == [
        "--reload-dir", "--reload-include", "--reload-exclude", "--reload-delay",
    ]
    assert ineffective_reload_options(config.replace(reload=True)) == []
    assert ineffective_reload_options(ServerConfig()) == []


def test_tls_options_allowed_with_certfile() -> None:
    c = ServerConfig(ssl_certfile="c.pem", ssl_keyfile="k.pem", ssl_keyfile_password="pw",
                     ssl_ca_certs="ca.pem", ssl_cert_reqs=2, ssl_ciphers="HIGH")
    assert c.ssl_enabled


def test_log_config_must_exist_with_known_extension(tmp_path: Path) -> None:
    good = tmp_path / "logging.yaml"
    good.write_text("version: 1\n")
    assert ServerConfig(log_config=str(good)).log_config == str(good)
    with pytest.raises(ConfigError, match="file not found"):
        ServerConfig(log_config=str(tmp_path / "missing.json"))
    bad = tmp_path / "logging.xml"
    bad.write_text("")
    with pytest.raises(ConfigError, match="unsupported file type"):
        ServerConfig(log_config=str(bad))


def test_uvloop_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    with pytest.raises(ConfigError, match="pip install uvloop"):
        ServerConfig(loop="uvloop")


# --------------------------------------------------------------------------- from_mapping


def test_from_mapping_accepts_dashes_and_underscores() -> None:
    c = ServerConfig.from_mapping({"timeout-keep-alive": "1m", "limit_request_fields": 5})
    assert c.timeout_keep_alive == 60.0
    assert c.limit_request_fields == 5


def test_from_mapping_unknown_key_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'timeout_keepalive'; did you mean "
                                          r"'timeout_keep_alive'"):
        ServerConfig.from_mapping({"timeout_keepalive": 3})


def test_from_mapping_unknown_key_without_close_match() -> None:
    with pytest.raises(ConfigError, match="pounce config show"):
        ServerConfig.from_mapping({"zzzzzz": 3})


def test_from_mapping_rejects_derived_fields() -> None:
    with pytest.raises(ConfigError, match="computed from other options"):
        ServerConfig.from_mapping({"bind_specs": ()})


# --------------------------------------------------------------------------- derived values


@pytest.mark.parametrize(
    ("kwargs", "specs"),
    [
        ({}, (BindSpec(kind="tcp", host="127.0.0.1", port=8000),)),
        ({"host": "::1", "port": 0}, (BindSpec(kind="tcp", host="::1", port=0),)),
        ({"host": "[::1]"}, (BindSpec(kind="tcp", host="::1", port=8000),)),
        ({"uds": "/tmp/p.sock"}, (BindSpec(kind="unix", path="/tmp/p.sock"),)),
        ({"fd": 3}, (BindSpec(kind="fd", fd=3),)),
        (
            {"bind": ["[::]:80", "unix:/run/a.sock", "fd://5"]},
            (
                BindSpec(kind="tcp", host="::", port=80),
                BindSpec(kind="unix", path="/run/a.sock"),
                BindSpec(kind="fd", fd=5),
            ),
        ),
        ({"bind": "0.0.0.0:80, :81"}, (BindSpec(kind="tcp", host="0.0.0.0", port=80),
                                       BindSpec(kind="tcp", host="0.0.0.0", port=81))),
    ],
)
def test_bind_specs(kwargs: dict[str, Any], specs: tuple[BindSpec, ...]) -> None:
    assert ServerConfig(**kwargs).bind_specs == specs


def test_encoded_headers() -> None:
    c = ServerConfig(headers=(("X-Powered-By", "Pounc\u00e9"), ("Cache-Control", "no-store")))
    assert c.encoded_headers == (
        (b"x-powered-by", "Pounc\u00e9".encode("latin-1")),
        (b"cache-control", b"no-store"),
    )
    assert c.headers[0][0] == "X-Powered-By"  # original spelling kept for display


def test_effective_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServerConfig().effective_workers == 1
    assert ServerConfig(workers=4).effective_workers == 4
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
        assert ServerConfig(workers=0).effective_workers == 3
        assert ServerConfig(workers="auto").effective_workers == 3  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("level", "number"),
    [("critical", 50), ("error", 40), ("warning", 30), ("warn", 30), ("info", 20),
     ("debug", 10), ("trace", 5)],
)
def test_log_level_number(level: str, number: int) -> None:
    c = ServerConfig(log_level=level)  # type: ignore[arg-type]
    assert c.log_level_number == number
    if level != "trace":
        assert number == logging.getLevelName(c.log_level.upper())


# --------------------------------------------------------------------------- unsupported


def test_defaults_use_no_unsupported_option() -> None:
    assert unsupported_options(ServerConfig()) == []


def test_unsupported_options_lists_flags() -> None:
    c = ServerConfig.from_mapping(
        {"reload": True, "reload_dirs": ["src"], "workers": 2, "ws": "wsproto",
         "pid_file": "p.pid", "limit_max_requests": 10, "limit_max_requests_jitter": 2,
         "limit_max_rss": "1g", "worker_type": "thread", "accept": "reuseport",
         "ssl_certfile": "c.pem", "ssl_keyfile": "k.pem"}
    )
    # Every option is implemented.
    assert unsupported_options(c) == []


def test_ws_auto_and_none_are_supported() -> None:
    assert unsupported_options(ServerConfig(ws="none")) == []


def test_unsupported_set_names_real_fields() -> None:
    assert set(UNSUPPORTED_OPTIONS) <= set(FIELD_DOCS)


def test_worker_options_are_supported() -> None:
    config = ServerConfig(workers=0, worker_type="thread", pid_file="p.pid")
    assert unsupported_options(config) == []


def test_config_error_survives_pickling() -> None:
    # Errors raised in worker processes travel back to the supervisor pickled.
    err = ConfigError("expected an integer", option="port", value="x").with_source("cli --port")
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) == "invalid port 'x' (from cli --port): expected an integer"
    assert (copy.option, copy.source) == ("port", "cli --port")


def test_startup_error_keeps_details_when_pickled() -> None:
    err = StartupError("boom", details="Traceback ...")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.message, copy.details) == ("boom", "Traceback ...")
