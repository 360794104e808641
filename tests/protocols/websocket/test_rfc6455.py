"""RFC 6455 conformance: opening handshake, framing, fragmentation, control frames, UTF-8, close.

Every case talks raw bytes to a real server (see conftest.py) and is bounded by socket
timeouts. A protocol violation by the client must end in a close frame with the code the RFC
names (7.4.1), then the server closing TCP (7.1.1) -- and the server must keep serving others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest
from tests.protocols.websocket.conftest import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RSV1,
    RSV2,
    RSV3,
    WsClient,
    accept_value,
    build_frame,
    close_payload,
    expect_failure,
    http_get,
    ws_server,
)
from tests.protocols.websocket.ws_apps import app

Connect = Callable[..., WsClient]
Raw = Callable[..., WsClient]

pytestmark = pytest.mark.usefixtures("still_serving")


def echo_round_trip(client: WsClient, text: str = "still alive") -> None:
    client.send_text(text)
    assert client.read_text() == text


# -- opening handshake (RFC 6455 4.2) ----------------------------------------------------


def test_accept_value_matches_the_rfc_example(raw: Raw) -> None:
    client = raw()
    response = client.try_handshake("/echo", key=b"dGhlIHNhbXBsZSBub25jZQ==")
    assert response.status == 101
    assert response.header(b"sec-websocket-accept") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert (response.header(b"upgrade") or b"").lower() == b"websocket"
    assert b"upgrade" in (response.header(b"connection") or b"").lower()
    echo_round_trip(client)


def test_accept_value_for_a_random_key(raw: Raw) -> None:
    client = raw()
    response = client.try_handshake("/echo")
    assert response.status == 101
    assert response.header(b"sec-websocket-accept") == accept_value(client.key)


def test_connection_header_with_several_tokens_and_mixed_case_upgrade(raw: Raw) -> None:
    client = raw()
    client.upgrade_request(
        "/echo",
        omit=("upgrade", "connection"),
        headers=[(b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"WebSocket")],
    )
    response = client.read_response_head()
    assert response.status == 101
    echo_round_trip(client)


def test_frames_sent_right_behind_the_handshake_are_not_lost(raw: Raw) -> None:
    # A client may pipeline its first frames with the upgrade request (same TCP segment).
    client = raw()
    client.upgrade_request("/echo")
    client.send_raw(build_frame(OP_TEXT, b"early") + build_frame(OP_BINARY, b"bird"))
    response = client.read_response_head()
    assert response.status == 101
    assert client.read_message() == (OP_TEXT, b"early")
    assert client.read_message() == (OP_BINARY, b"bird")


def test_missing_key_is_refused(raw: Raw) -> None:
    client = raw()
    response = client.try_handshake("/echo", omit=("sec-websocket-key",))
    assert response.status == 400


@pytest.mark.parametrize(
    "key",
    [b"not-base64!!", b"c2hvcnQ=", b"dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ=="],
    ids=["not-base64", "decodes-to-5-bytes", "decodes-to-32-bytes"],
)
def test_invalid_key_is_refused(raw: Raw, key: bytes) -> None:
    # RFC 6455 4.1: the key is 16 random bytes, base64-encoded; 4.2.1 requires refusing others.
    client = raw()
    response = client.try_handshake("/echo", key=key)
    assert response.status == 400


@pytest.mark.parametrize("version", ["8", "12", "14", "abc"])
def test_unsupported_version_gets_426_with_the_supported_version(raw: Raw, version: str) -> None:
    client = raw()
    response = client.try_handshake("/echo", ws_version=version)
    assert response.status == 426
    assert response.header(b"sec-websocket-version") == b"13"


def test_missing_version_is_refused(raw: Raw) -> None:
    client = raw()
    response = client.try_handshake("/echo", ws_version=None)
    assert response.status in (400, 426)
    if response.status == 426:
        assert response.header(b"sec-websocket-version") == b"13"


def test_post_upgrade_is_not_a_websocket(raw: Raw) -> None:
    client = raw()
    response = client.try_handshake(
        "/echo", method="POST", headers=[(b"Content-Length", b"0")]
    )
    assert response.status != 101


def test_http10_upgrade_is_not_a_websocket(raw: Raw) -> None:
    client = raw()
    response = client.try_handshake("/echo", version="1.0")
    assert response.status != 101


def test_upgrade_to_another_protocol_is_plain_http(raw: Raw) -> None:
    client = raw()
    client.upgrade_request("/", omit=("upgrade",), headers=[(b"Upgrade", b"h2c")])
    response = client.read_http_response()
    assert (response.status, response.body) == (200, b"ok")


def test_subprotocol_is_negotiated_and_scope_lists_the_offer(connect: Connect) -> None:
    client = connect("/subprotocol", protocols=["chat", "chat.v2", "other"])
    assert client.response is not None
    assert client.response.header(b"sec-websocket-protocol") == b"chat.v2"
    assert json.loads(client.read_text()) == ["chat", "chat.v2", "other"]


def test_subprotocol_offers_in_several_headers_are_joined(raw: Raw) -> None:
    client = raw()
    client.upgrade_request(
        "/subprotocol",
        headers=[(b"Sec-WebSocket-Protocol", b"x, chat"), (b"Sec-WebSocket-Protocol", b"y")],
    )
    response = client.read_response_head()
    assert response.status == 101
    assert response.header(b"sec-websocket-protocol") == b"chat"
    assert json.loads(client.read_text()) == ["x", "chat", "y"]


def test_no_subprotocol_header_when_the_app_chooses_none(connect: Connect) -> None:
    client = connect("/subprotocol", protocols=["unknown"])
    assert client.response is not None
    assert client.response.header(b"sec-websocket-protocol") is None
    assert json.loads(client.read_text()) == ["unknown"]


@pytest.mark.parametrize(
    "value",
    [b"\xc3\xa9t\xc3\xa9, chat", b"\xff\xfe\xfd", b",,, ,", b"chat" * 1000, b"a b\tc, chat"],
    ids=["utf8", "invalid-utf8", "empty-items", "long", "whitespace"],
)
def test_garbage_subprotocol_header_does_not_crash(echo_url: str, value: bytes) -> None:
    with WsClient.open(echo_url) as client:
        client.upgrade_request("/subprotocol", headers=[(b"Sec-WebSocket-Protocol", value)])
        response = client.read_response_head()
        assert response.status in (101, 400)
        if response.status == 101:
            offered = json.loads(client.read_text())
            assert isinstance(offered, list)
            echo_round_trip(client)
    assert http_get(echo_url) == (200, b"ok")


def test_extra_headers_on_accept(connect: Connect) -> None:
    client = connect("/accept-headers")
    assert client.response is not None
    assert client.response.header(b"x-pounce-test") == b"yes"
    assert client.response.header_values(b"set-cookie") == [b"a=1", b"b=2"]
    echo_round_trip(client)


def test_websocket_scope(connect: Connect) -> None:
    client = connect("/scope?a=1&b=%20x", protocols=["p1", "p2"])
    info = json.loads(client.read_text())
    assert info["type"] == "websocket"
    assert info["path"] == "/scope"
    assert info["query_string"] == "a=1&b=%20x"
    assert info["scheme"] == "ws"
    assert info["http_version"] == "1.1"
    assert info["subprotocols"] == ["p1", "p2"]
    assert info["asgi"]["version"] == "3.0"
    assert info["asgi"]["spec_version"].startswith("2.")
    assert "sec-websocket-key" in info["header_names"]
    assert info["client"][0] == "127.0.0.1"
    assert info["server"][0] == "127.0.0.1"


# -- framing (RFC 6455 5.2, 5.3) ---------------------------------------------------------


def test_unmasked_client_frame_fails_with_1002(connect: Connect) -> None:
    client = connect()
    client.send_text("unmasked", mask=False)
    expect_failure(client, 1002)


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3], ids=str)
def test_reserved_bits_without_extension_fail_with_1002(connect: Connect, rsv: int) -> None:
    client = connect()
    client.send_text("reserved", rsv=rsv)
    expect_failure(client, 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF], ids=hex)
def test_reserved_opcode_fails_with_1002(connect: Connect, opcode: int) -> None:
    client = connect()
    client.send_frame(opcode, b"x")
    expect_failure(client, 1002)


@pytest.mark.parametrize(
    "size", [0, 1, 125, 126, 127, 65535, 65536, 200_000], ids=lambda n: f"{n}B"
)
def test_payload_length_encodings_round_trip(connect: Connect, size: int) -> None:
    client = connect()
    payload = os.urandom(size)
    client.send_binary(payload)
    assert client.read_message() == (OP_BINARY, payload)


def test_server_uses_the_minimal_length_encoding(connect: Connect) -> None:
    client = connect()
    sizes = []
    for size in (125, 126, 65535, 65536):
        client.send_binary(b"z" * size)
        frame = client.read_data_frame()
        assert frame.payload == b"z" * size
        sizes.append(frame.header_size)
    # RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the length".
    assert sizes == [2, 4, 4, 10]


def test_64bit_length_with_the_top_bit_set_fails_with_1002(connect: Connect) -> None:
    client = connect()
    client.send_raw(build_frame(OP_BINARY, b"", declared_length=1 << 63, length_bits=64))
    expect_failure(client, 1002)


def test_zero_length_text_and_binary(connect: Connect) -> None:
    client = connect()
    client.send_text(b"")
    assert client.read_message() == (OP_TEXT, b"")
    client.send_binary(b"")
    assert client.read_message() == (OP_BINARY, b"")


def test_frame_delivered_one_byte_at_a_time(connect: Connect) -> None:
    client = connect()
    frame = build_frame(OP_TEXT, "slow \u00e9 bytes".encode())
    for index in range(len(frame)):
        client.send_raw(frame[index : index + 1])
    assert client.read_text() == "slow \u00e9 bytes"


def test_many_frames_in_one_write_are_answered_in_order(connect: Connect) -> None:
    client = connect()
    client.send_raw(b"".join(build_frame(OP_TEXT, b"m%d" % i) for i in range(50)))
    assert [client.read_text() for _ in range(50)] == [f"m{i}" for i in range(50)]


def test_server_frames_are_unmasked_with_clear_reserved_bits(connect: Connect) -> None:
    client = connect()
    client.send_text("x")
    frame = client.read_data_frame()
    assert (frame.masked, frame.rsv, frame.fin, frame.opcode) == (False, 0, True, OP_TEXT)


# -- fragmentation (RFC 6455 5.4) --------------------------------------------------------


def test_text_in_fragments(connect: Connect) -> None:
    client = connect()
    client.send_frame(OP_TEXT, b"one ", fin=False)
    client.send_frame(OP_CONTINUATION, b"two ", fin=False)
    client.send_frame(OP_CONTINUATION, b"three")
    assert client.read_text() == "one two three"


def test_binary_in_fragments_with_empty_pieces(connect: Connect) -> None:
    client = connect()
    client.send_frame(OP_BINARY, b"", fin=False)
    client.send_frame(OP_CONTINUATION, b"\x00\x01", fin=False)
    client.send_frame(OP_CONTINUATION, b"", fin=False)
    client.send_frame(OP_CONTINUATION, b"\x02")
    assert client.read_message() == (OP_BINARY, b"\x00\x01\x02")


def test_ping_inside_a_fragmented_message_is_answered_first(connect: Connect) -> None:
    client = connect()
    client.send_frame(OP_TEXT, b"frag", fin=False)
    client.send_frame(OP_PING, b"in the middle")
    client.send_frame(OP_PONG, b"unsolicited in the middle")
    client.send_frame(OP_CONTINUATION, b"mented")
    pong = client.read_frame()
    assert (pong.opcode, pong.payload) == (OP_PONG, b"in the middle")
    assert client.read_text() == "fragmented"


def test_close_inside_a_fragmented_message_closes_normally(connect: Connect) -> None:
    client = connect()
    client.send_frame(OP_TEXT, b"never ", fin=False)
    client.send_close(1000)
    frame = client.expect_close(1000)
    assert frame.opcode == OP_CLOSE
    client.expect_tcp_close()


@pytest.mark.parametrize("fin", [True, False], ids=["final", "non-final"])
def test_continuation_without_a_start_fails_with_1002(connect: Connect, fin: bool) -> None:
    client = connect()
    client.send_frame(OP_CONTINUATION, b"orphan", fin=fin)
    expect_failure(client, 1002)


def test_continuation_after_a_finished_message_fails_with_1002(connect: Connect) -> None:
    client = connect()
    client.send_text("complete")
    assert client.read_text() == "complete"
    client.send_frame(OP_CONTINUATION, b"late")
    expect_failure(client, 1002)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_new_data_frame_inside_a_fragmented_message_fails_with_1002(
    connect: Connect, opcode: int
) -> None:
    client = connect()
    client.send_frame(OP_TEXT, b"start", fin=False)
    client.send_frame(opcode, b"interloper")
    expect_failure(client, 1002)


# -- control frames (RFC 6455 5.5) -------------------------------------------------------


@pytest.mark.parametrize(
    "payload", [b"", b"hello", bytes(range(125))], ids=["empty", "text", "125-bytes"]
)
def test_ping_gets_a_pong_with_the_same_payload(connect: Connect, payload: bytes) -> None:
    client = connect()
    client.send_frame(OP_PING, payload)
    frame = client.read_frame()
    assert (frame.opcode, frame.payload, frame.fin) == (OP_PONG, payload, True)


def test_unsolicited_pong_is_ignored(connect: Connect) -> None:
    client = connect()
    client.send_frame(OP_PONG, b"nobody asked")
    client.send_text("after pong")
    frame = client.read_data_frame()
    assert (frame.opcode, frame.payload) == (OP_TEXT, b"after pong")


def test_ping_payload_over_125_bytes_fails_with_1002(connect: Connect) -> None:
    client = connect()
    client.send_frame(OP_PING, b"p" * 126)
    expect_failure(client, 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE], ids=["ping", "pong", "close"])
def test_fragmented_control_frame_fails_with_1002(connect: Connect, opcode: int) -> None:
    client = connect()
    payload = close_payload(1000) if opcode == OP_CLOSE else b"frag"
    client.send_frame(opcode, payload, fin=False)
    expect_failure(client, 1002)


def test_close_payload_over_125_bytes_fails_with_1002(connect: Connect) -> None:
    client = connect()
    client.send_frame(OP_CLOSE, close_payload(1000, b"r" * 124))
    expect_failure(client, 1002)


def test_many_pings_all_get_pongs(connect: Connect) -> None:
    client = connect()
    client.send_raw(b"".join(build_frame(OP_PING, b"%d" % i) for i in range(20)))
    pongs = [client.read_frame() for _ in range(20)]
    assert [(f.opcode, f.payload) for f in pongs] == [(OP_PONG, b"%d" % i) for i in range(20)]


# -- UTF-8 (RFC 6455 5.6, 8.1) -----------------------------------------------------------

INVALID_UTF8 = {
    "lone-ff": b"\xff",
    "overlong-slash": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "above-u10ffff": b"\xf4\x90\x80\x80",
    "truncated-at-end": b"ok \xe2\x82",
}


@pytest.mark.parametrize("payload", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
def test_invalid_utf8_text_fails_with_1007(connect: Connect, payload: bytes) -> None:
    client = connect()
    client.send_text(payload)
    expect_failure(client, 1007)


def test_invalid_utf8_split_across_fragments_fails_with_1007(connect: Connect) -> None:
    client = connect()
    client.send_frame(OP_TEXT, "\u03ba\u1f79".encode(), fin=False)
    client.send_frame(OP_CONTINUATION, b"\xf4\x90", fin=False)
    client.send_frame(OP_CONTINUATION, b"\x80\x80")
    expect_failure(client, 1007)


def test_valid_multibyte_text_split_at_every_byte_boundary(connect: Connect) -> None:
    client = connect()
    text = "\u03ba\u1f79\u03c3\u03bc\u03b5 \U0001f600 \u20ac"
    data = text.encode()
    for cut in range(1, len(data)):
        client.send_frame(OP_TEXT, data[:cut], fin=False)
        client.send_frame(OP_CONTINUATION, data[cut:])
        assert client.read_text() == text


def test_valid_text_one_byte_per_fragment(connect: Connect) -> None:
    client = connect()
    data = "\U0001f600\u00e9\u20ac".encode()
    client.send_frame(OP_TEXT, data[:1], fin=False)
    for byte in data[1:-1]:
        client.send_frame(OP_CONTINUATION, bytes([byte]), fin=False)
    client.send_frame(OP_CONTINUATION, data[-1:])
    assert client.read_text() == "\U0001f600\u00e9\u20ac"


def test_invalid_utf8_in_close_reason_fails_with_1007(connect: Connect) -> None:
    client = connect()
    client.send_close(1000, b"bad \xff reason")
    expect_failure(client, 1007)


def test_binary_messages_are_not_utf8_checked(connect: Connect) -> None:
    client = connect()
    client.send_binary(b"\xff\xfe\xc0\xaf")
    assert client.read_message() == (OP_BINARY, b"\xff\xfe\xc0\xaf")


# -- closing handshake (RFC 6455 5.5.1, 7) -----------------------------------------------

VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_valid_close_code_is_echoed(connect: Connect, code: int) -> None:
    client = connect()
    client.send_close(code, b"bye")
    frame = client.expect_close()
    assert frame.close_code == code
    client.expect_tcp_close()


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_invalid_close_code_fails_with_1002(connect: Connect, code: int) -> None:
    client = connect()
    client.send_close(code)
    expect_failure(client, 1002)


def test_close_without_payload_is_answered(connect: Connect) -> None:
    client = connect()
    client.send_close(None)
    frame = client.expect_close()
    # 1005 means "no code received" and must never appear on the wire (7.4.1).
    assert frame.close_code in (None, 1000)
    client.expect_tcp_close()


def test_close_with_one_byte_payload_fails_with_1002(connect: Connect) -> None:
    client = connect()
    client.send_frame(OP_CLOSE, b"\x03")
    expect_failure(client, 1002)


def test_server_closes_tcp_after_the_close_handshake(connect: Connect) -> None:
    client = connect()
    client.send_close(1000, b"done")
    client.expect_close(1000)
    # 7.1.1: the server should close the TCP connection first, and promptly.
    client.expect_tcp_close(timeout=3.0)


def test_data_after_close_is_ignored(connect: Connect) -> None:
    client = connect()
    client.send_raw(
        build_frame(OP_CLOSE, close_payload(1000)) + build_frame(OP_TEXT, b"after close")
    )
    frame = client.read_frame()
    assert frame.opcode == OP_CLOSE
    try:
        while True:
            later = client.read_frame(timeout=1.0)
            assert later.opcode != OP_TEXT, "the server echoed a message sent after its close"
    except (ConnectionError, TimeoutError):
        pass


def test_server_initiated_close_carries_code_and_reason(connect: Connect) -> None:
    client = connect("/close?code=4001&reason=going%20now&id=rfc-server-close")
    frame = client.expect_close(4001)
    assert frame.close_reason == b"going now"
    client.expect_tcp_close()


def test_server_close_without_an_answer_times_out() -> None:
    # Pings off: only a close-handshake timeout can end this connection (RFC 6455 7.1.1 lets
    # the server close TCP itself after a reasonable wait; it must not wait forever).
    with ws_server(app, ws_ping_interval=None, ws_ping_timeout=None) as running, WsClient.open(
        running.url
    ) as client:
        client.handshake("/close?code=1000&id=rfc-no-answer")
        frame = client.read_data_frame()
        assert frame.opcode == OP_CLOSE
        # Never answer, never close our side.
        client.expect_tcp_close(timeout=15.0)
