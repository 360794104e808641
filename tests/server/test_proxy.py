"""Proxy headers on a live server: trusted peers rewrite client/scheme/server, others do not."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from tests.apps import scope_json
from tests.helpers import fetch, http_version, wait_until

from pounce.testing import serve

FORWARDED_X = [
    ("host", "internal:8000"),
    ("x-forwarded-for", "203.0.113.7"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "public.example:8443"),
]
FORWARDED_RFC = [
    ("host", "internal:8000"),
    ("forwarded", 'for="203.0.113.9:4711";proto=https;host=www.example.org'),
]


def scope_for(
    url: str, headers: list[tuple[str, str]], target: str = "/", protocol: str = "http/1.1"
) -> dict[str, Any]:
    """The scope the app saw; over HTTP/2 the ``host`` given goes as ``:authority``."""
    response = fetch(url, target, headers, protocol=protocol)
    assert response.status == 200
    return dict(json.loads(response.body))


def host_header(scope: dict[str, Any]) -> list[str]:
    return [value for name, value in scope["headers"] if name == "host"]


def test_x_forwarded_headers_from_trusted_proxy_update_the_scope(protocol: str) -> None:
    with serve(scope_json) as url:  # proxy_headers on, forwarded_allow_ips=127.0.0.1
        scope = scope_for(url, FORWARDED_X, protocol=protocol)
    assert scope["http_version"] == http_version(protocol)
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"
    assert scope["server"] == ["public.example", 8443]
    assert host_header(scope) == ["public.example:8443"]


def test_forwarded_header_from_trusted_proxy_updates_the_scope(protocol: str) -> None:
    with serve(scope_json) as url:
        scope = scope_for(url, FORWARDED_RFC, protocol=protocol)
    assert scope["client"] == ["203.0.113.9", 4711]
    assert scope["scheme"] == "https"
    assert scope["server"] == ["www.example.org", 443]
    assert host_header(scope) == ["www.example.org"]


def test_forwarded_wins_over_x_forwarded() -> None:
    with serve(scope_json) as url:
        scope = scope_for(url, FORWARDED_RFC + FORWARDED_X[1:])
    assert scope["client"] == ["203.0.113.9", 4711]


def test_client_is_the_rightmost_untrusted_hop() -> None:
    headers = [("host", "x"), ("x-forwarded-for", "1.2.3.4, 198.51.100.1, 127.0.0.1")]
    with serve(scope_json) as url:
        scope = scope_for(url, headers)
    # 127.0.0.1 is a trusted proxy; 198.51.100.1 is the first hop we cannot vouch for, and
    # 1.2.3.4 is whatever that client claimed.
    assert scope["client"] == ["198.51.100.1", 0]


@pytest.mark.parametrize("headers", [FORWARDED_X, FORWARDED_RFC], ids=["x-forwarded", "rfc7239"])
def test_headers_from_an_untrusted_peer_are_ignored(headers: list[tuple[str, str]]) -> None:
    with serve(scope_json, forwarded_allow_ips=("10.0.0.1",)) as url:
        scope = scope_for(url, headers)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["client"][1] != 0
    assert scope["scheme"] == "http"
    assert scope["server"][0] == "127.0.0.1"
    assert host_header(scope) == ["internal:8000"]


@pytest.mark.parametrize("headers", [FORWARDED_X, FORWARDED_RFC], ids=["x-forwarded", "rfc7239"])
def test_proxy_headers_off_ignores_them(headers: list[tuple[str, str]]) -> None:
    with serve(scope_json, proxy_headers=False, forwarded_allow_ips=("*",)) as url:
        scope = scope_for(url, headers)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"
    assert scope["server"][0] == "127.0.0.1"
    assert host_header(scope) == ["internal:8000"]


def test_trust_is_configurable_by_network() -> None:
    with serve(scope_json, forwarded_allow_ips=("10.0.0.0/8", "127.0.0.0/8")) as url:
        scope = scope_for(url, FORWARDED_X)
    assert scope["client"] == ["203.0.113.7", 0]


@pytest.mark.parametrize(
    "headers",
    [
        [("host", "x"), ("x-forwarded-for", "not-an-ip"), ("x-forwarded-proto", "gopher")],
        [("host", "x"), ("x-forwarded-host", "evil.example/path?")],
        [("host", "x"), ("forwarded", 'for="unterminated')],
    ],
    ids=["garbage-xff", "bad-host", "unbalanced-forwarded"],
)
def test_malformed_proxy_headers_are_ignored_not_fatal(headers: list[tuple[str, str]]) -> None:
    with serve(scope_json) as url:
        scope = scope_for(url, headers)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"
    assert host_header(scope) == ["x"]


@pytest.fixture
def access_caplog(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    logger = logging.getLogger("pounce.access")
    saved = logger.propagate
    logger.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="pounce.access"):
            yield caplog
    finally:
        logger.propagate = saved


def test_access_log_shows_the_forwarded_client(
    access_caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    with serve(scope_json, access_log=True) as url:
        scope_for(url, FORWARDED_X, protocol=protocol)
        assert wait_until(
            lambda: any(r.name == "pounce.access" for r in access_caplog.records), 3.0
        )
    (record,) = [r for r in access_caplog.records if r.name == "pounce.access"]
    assert record.getMessage().startswith("203.0.113.7:0 - ")
