"""The ASGI WebSocket interface (spec 2.x, https://asgi.readthedocs.io/en/latest/specs/www.html).

What the app sees (events, in order, with their fields) and what the client sees for each
thing the app does: accept, close before accept, deny with an HTTP response, raise.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from tests.protocols.websocket.conftest import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_TEXT,
    WsClient,
    http_get,
)
from tests.protocols.websocket.ws_apps import wait_result

Connect = Callable[..., WsClient]
Raw = Callable[..., WsClient]

pytestmark = pytest.mark.usefixtures("still_serving")


def new_id() -> str:
    return uuid.uuid4().hex


def test_connect_is_the_first_event_then_messages_then_disconnect(connect: Connect) -> None:
    key = new_id()
    client = connect(f"/events?id={key}")
    client.send_text("hello \u00e9")
    client.send_binary(b"\x00\xff")
    client.send_frame(OP_TEXT, b"frag", fin=False)
    client.send_frame(OP_CONTINUATION, b"mented")
    client.send_close(4000, "see you \u00e9".encode())
    client.expect_close(4000)
    seen = wait_result(key)
    assert [event["type"] for event in seen] == [
        "websocket.connect",
        "websocket.receive",
        "websocket.receive",
        "websocket.receive",
        "websocket.disconnect",
    ]
    assert seen[1].get("text") == "hello \u00e9" and seen[1].get("bytes") is None
    assert seen[2].get("bytes") == b"\x00\xff" and seen[2].get("text") is None
    assert seen[3].get("text") == "fragmented"
    assert seen[4]["code"] == 4000


def test_disconnect_carries_the_client_reason(connect: Connect) -> None:
    key = new_id()
    client = connect(f"/echo?id={key}")
    client.send_close(4321, b"client reason")
    client.expect_close(4321)
    disconnect = wait_result(key)
    assert disconnect["type"] == "websocket.disconnect"
    assert (disconnect["code"], disconnect.get("reason")) == (4321, "client reason")


def test_disconnect_without_a_code_reports_1005(connect: Connect) -> None:
    key = new_id()
    client = connect(f"/echo?id={key}")
    client.send_close(None)
    client.expect_close()
    assert wait_result(key)["code"] == 1005


def test_abrupt_tcp_close_reports_1006(connect: Connect) -> None:
    key = new_id()
    client = connect(f"/echo?id={key}")
    client.send_text("one")
    assert client.read_text() == "one"
    client.close()
    assert wait_result(key)["code"] == 1006


def test_protocol_error_reports_a_disconnect_to_the_app(connect: Connect) -> None:
    key = new_id()
    client = connect(f"/echo?id={key}")
    client.send_frame(0x3, b"reserved opcode")
    disconnect = wait_result(key)
    assert disconnect["type"] == "websocket.disconnect"
    assert disconnect["code"] in (1002, 1006)


def test_accept_with_subprotocol_and_headers(connect: Connect) -> None:
    client = connect("/subprotocol", protocols=["chat"])
    assert client.response is not None
    assert client.response.header(b"sec-websocket-protocol") == b"chat"
    client2 = connect("/accept-headers")
    assert client2.response is not None
    assert client2.response.header(b"x-pounce-test") == b"yes"


def test_close_before_accept_is_403(raw: Raw) -> None:
    client = raw()
    response = client.try_handshake("/reject")
    assert response.status == 403
    assert response.header(b"sec-websocket-accept") is None


def test_http_response_extension_sends_the_apps_response(raw: Raw) -> None:
    client = raw()
    response = client.try_handshake("/deny")
    assert response.status == 418
    assert response.header(b"x-denied") == b"yes"
    assert response.header(b"content-type") == b"text/plain"
    assert response.body == b"no websockets here"
    assert response.header(b"sec-websocket-accept") is None


def test_scope_advertises_the_http_response_extension(connect: Connect) -> None:
    import json

    client = connect("/scope")
    info = json.loads(client.read_text())
    assert "websocket.http.response" in info["extensions"]


def test_exception_before_accept_is_500_without_upgrade(raw: Raw) -> None:
    client = raw()
    response = client.try_handshake("/raise-before")
    assert response.status == 500
    assert response.header(b"sec-websocket-accept") is None
    assert (response.header(b"upgrade") or b"").lower() != b"websocket"


def test_exception_after_accept_closes_with_1011(connect: Connect) -> None:
    client = connect("/raise-after")
    client.send_text("trigger")
    client.expect_close(1011)
    client.expect_tcp_close()


def test_app_returning_after_accept_closes_the_websocket(connect: Connect) -> None:
    client = connect("/return")
    frame = client.expect_close()
    assert frame.close_code in (1000, 1011)
    client.expect_tcp_close()


def test_server_close_with_code_and_reason_then_disconnect(connect: Connect) -> None:
    key = new_id()
    client = connect(f"/close?code=4002&reason=policy%20says%20no&id={key}")
    frame = client.expect_close(4002)
    assert frame.close_reason == b"policy says no"
    after = wait_result(key)
    assert after["type"] == "websocket.disconnect"


def test_send_after_close_raises(connect: Connect) -> None:
    key = new_id()
    client = connect(f"/send-after-close?id={key}")
    frame = client.expect_close(1000)
    assert frame.opcode == OP_CLOSE
    assert wait_result(key)["raised"] is not None


def test_send_after_client_disconnect_raises_oserror(connect: Connect) -> None:
    key = new_id()
    client = connect(f"/send-after-disconnect?id={key}")
    client.send_close(1000)
    client.expect_close(1000)
    result = wait_result(key)
    # ASGI 2.4: send() on a closed connection raises a server-specific OSError subclass.
    assert result["oserror"], result


def test_unknown_path_rejected_by_app_does_not_affect_others(raw: Raw, echo_url: str) -> None:
    client = raw()
    assert client.try_handshake("/nowhere").status == 403
    assert http_get(echo_url, "/") == (200, b"ok")


def test_binary_and_text_echo_types_are_kept(connect: Connect) -> None:
    client = connect()
    client.send_text("t")
    client.send_binary(b"b")
    assert client.read_message() == (OP_TEXT, b"t")
    assert client.read_message() == (OP_BINARY, b"b")


def test_hostile_cases_leave_the_server_serving(echo_url: str) -> None:
    # A burst of hostile connections one after the other, then normal traffic.
    for frame in (b"\x83\x80abcd", b"\x81\x7f" + b"\xff" * 8, b"\x88\x81abcd\x00"):
        with WsClient.open(echo_url) as client:
            client.handshake("/echo")
            client.send_raw(frame)
            client.expect_tcp_close()
    with WsClient.open(echo_url) as client:
        client.handshake("/echo")
        client.send_text("fine")
        assert client.read_text() == "fine"
    assert http_get(echo_url) == (200, b"ok")
