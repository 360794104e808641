"""``--request-id`` through real sockets, and its pieces alone."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from tests import helpers
from tests.apps import scope_json
from tests.helpers import propagating, wait_until

from pounce.pipeline.request_id import RequestIdHeader, RequestIds, is_acceptable_id
from pounce.testing import serve

GENERATED = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(autouse=True)
def propagating_loggers() -> Iterator[None]:
    with propagating("pounce", "pounce.error", "pounce.access"):
        yield


def fetch(
    url: str, headers: list[tuple[str, str]] | None = None, protocol: str = "http/1.1"
) -> tuple[str | None, bytes | None]:
    """The id the app saw in its scope, and the one the response carried."""
    response = helpers.fetch(url, "/", headers, protocol=protocol)
    assert response.status == 200
    extension = json.loads(response.body)["extensions"].get("pounce.request_id")
    seen = extension["id"] if extension is not None else None
    return seen, response.header(b"x-request-id")


def test_off_by_default() -> None:
    with serve(scope_json) as url:
        assert fetch(url) == (None, None)


def test_generated_ids_are_unique_and_in_scope_and_response(protocol: str) -> None:
    with serve(scope_json, request_id=True) as url:
        ids = [fetch(url, protocol=protocol) for _ in range(5)]
    for seen, sent in ids:
        assert seen is not None and GENERATED.match(seen), seen
        assert sent == seen.encode()
    assert len({seen for seen, _ in ids}) == 5


def test_a_trusted_proxy_id_is_kept(protocol: str) -> None:
    # The test client connects from 127.0.0.1, trusted by default.
    with serve(scope_json, request_id=True) as url:
        kept = fetch(url, [("X-Request-ID", "lb-1234/abc")], protocol)
    assert kept == ("lb-1234/abc", b"lb-1234/abc")


def test_an_untrusted_peer_id_is_replaced(protocol: str) -> None:
    with serve(scope_json, request_id=True, forwarded_allow_ips="10.0.0.1") as url:
        seen, sent = fetch(url, [("x-request-id", "chosen-by-client")], protocol)
    assert seen is not None and GENERATED.match(seen)
    assert sent == seen.encode()


@pytest.mark.parametrize("value", ["x" * 201, "has space", "caf\xe9"])
def test_invalid_ids_are_replaced(value: str, protocol: str) -> None:
    with serve(scope_json, request_id=True) as url:
        seen, sent = fetch(url, [("x-request-id", value)], protocol)
    assert seen is not None and GENERATED.match(seen), seen
    assert sent == seen.encode()


def test_the_header_name_is_configurable(protocol: str) -> None:
    with serve(scope_json, request_id=True, request_id_header="X-Correlation-ID") as url:
        response = helpers.fetch(url, "/", [("x-correlation-id", "abc")], protocol=protocol)
    assert response.header(b"x-correlation-id") == b"abc"
    assert response.header(b"x-request-id") is None
    assert json.loads(response.body)["extensions"]["pounce.request_id"] == {"id": "abc"}


def test_the_app_own_header_wins(protocol: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"x-request-id", b"from-app")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    with serve(app, request_id=True) as url:
        response = helpers.fetch(url, protocol=protocol)
    assert response.header_values(b"x-request-id") == [b"from-app"]


def test_access_log_prints_it(caplog: pytest.LogCaptureFixture, protocol: str) -> None:
    with caplog.at_level(logging.INFO, logger="pounce.access"), serve(
        scope_json, request_id=True, access_log=True,
        access_log_format="%(r)s id=%({x-request-id}o)s",
    ) as url:
        seen, _ = fetch(url, protocol=protocol)
        assert wait_until(
            lambda: any(r.name == "pounce.access" for r in caplog.records), 3.0
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "pounce.access"]
    assert lines == [f"GET / HTTP/{helpers.http_version(protocol)} id={seen}"]


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_each_worker_mode(worker_type: str, protocol: str) -> None:
    with serve("tests.apps:scope_json", request_id=True, workers=2,
               worker_type=worker_type) as url:
        ids = [fetch(url, protocol=protocol) for _ in range(6)]
    assert all(seen is not None and sent == seen.encode() for seen, sent in ids)
    assert len({seen for seen, _ in ids}) == 6


# -- the pieces alone -------------------------------------------------------------------------


def test_acceptable_ids() -> None:
    assert is_acceptable_id(b"abc-123_/.:~!")
    assert is_acceptable_id(b"x" * 200)
    for bad in (b"", b"x" * 201, b"a b", b"a\tb", b"a\x7fb", b"\xe9"):
        assert not is_acceptable_id(bad), bad


def test_filter_never_writes_an_id_the_app_broke() -> None:
    scope: dict[str, Any] = {"extensions": {"pounce.request_id": {"id": "a\r\nset-cookie: x"}}}
    fields, length = RequestIdHeader(scope, b"x-request-id").start(200, [], 5)
    assert (fields, length) == ([], 5)
    scope["extensions"]["pounce.request_id"] = {"id": "fine"}
    fields, _ = RequestIdHeader(scope, b"x-request-id").start(200, [], 5)
    assert fields == [(b"x-request-id", b"fine")]


def test_generated_ids_differ_between_workers() -> None:
    first, second = RequestIds("x-request-id"), RequestIds("x-request-id")
    assert first.new_id() != second.new_id()
    assert first.new_id() != first.new_id()


def test_websocket_scopes_get_an_id_too() -> None:
    from websockets.sync.client import connect

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send",
                    "text": scope["extensions"]["pounce.request_id"]["id"]})
        await send({"type": "websocket.close"})

    with serve(app, ws="websockets", request_id=True) as url, \
            connect(url.replace("http://", "ws://") + "/") as ws:
        assert GENERATED.match(str(ws.recv(timeout=5)))
