"""h2spec's "http2" group: RFC 9113 (was RFC 7540) sections 3 to 8, error cases included.

Test names carry h2spec's numbering (section, then case); ``peer`` is past the handshake,
``conn`` has only connected.
"""

from __future__ import annotations

import struct

from tests.conformance.h2spec.peer import (
    CANCEL,
    COMPRESSION_ERROR,
    DATA,
    ENABLE_PUSH,
    END_HEADERS,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    Frame,
    Peer,
    expect_connection_close,
    expect_connection_error,
    expect_data_length,
    expect_frame,
    expect_headers,
    expect_ping_ack,
    expect_ping_ack_or_close,
    expect_settings_ack,
    expect_stream_close,
    expect_stream_error,
    raw_frame,
)

PING_DATA = b"h2spec\0\0"
#: h2spec's filler header value length.
DUMMY_LENGTH = 4000


def dummy(count: int) -> list[tuple[bytes, bytes]]:
    return [(b"x-dummy%d" % i, b"x" * DUMMY_LENGTH) for i in range(count)]


# -- 3.5 HTTP/2 connection preface ----------------------------------------------------------------


def test_3_5_1_client_preface(conn: Peer) -> None:
    conn.send(PREFACE)
    conn.send_settings((INITIAL_WINDOW_SIZE, 65535))
    event = conn.event()
    assert isinstance(event, Frame) and event.kind == SETTINGS and not event.is_ack, event


def test_3_5_2_invalid_preface(conn: Peer, server_kind: str) -> None:
    conn.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
    if server_kind == "http2-only":
        expect_connection_error(conn, PROTOCOL_ERROR)
        return
    # A cleartext port that serves HTTP/1.1 too answers what is not the exact preface as
    # HTTP/1.1 (a 400): the one h2spec case such a port fails, by choice; over TLS (ALPN)
    # and with --http h2 the invalid preface gets GOAWAY PROTOCOL_ERROR.
    assert conn.read_raw().startswith(b"HTTP/1.1 400 ")


# -- 4.1 Frame format -----------------------------------------------------------------------------


def test_4_1_1_unknown_frame_type(peer: Peer) -> None:
    peer.send(raw_frame(0x16, 0, 0, b"\0" * 8))
    peer.ping()
    expect_ping_ack(peer, b"\0" * 8)


def test_4_1_2_undefined_flag(peer: Peer) -> None:
    peer.send(raw_frame(PING, 0x16, 0, b"\0" * 8))
    expect_frame(peer, PING)


def test_4_1_3_reserved_bit(peer: Peer) -> None:
    peer.send(raw_frame(PING, 0x16, 0x80000000, b"\0" * 8))
    expect_frame(peer, PING)


# -- 4.2 Frame size -------------------------------------------------------------------------------


def test_4_2_1_data_of_max_frame_size(peer: Peer) -> None:
    peer.request(1, b"POST", end_stream=False)
    peer.data(1, b"x" * peer.max_frame_size)
    expect_headers(peer, 1)


def test_4_2_2_data_over_max_frame_size(peer: Peer) -> None:
    peer.request(1, b"POST", end_stream=False)
    peer.data(1, b"x" * (peer.max_frame_size + 1))
    expect_stream_error(peer, FRAME_SIZE_ERROR)


def test_4_2_3_headers_over_max_frame_size(peer: Peer) -> None:
    peer.headers(1, peer.request_headers() + dummy(5))
    expect_connection_error(peer, FRAME_SIZE_ERROR)


# -- 4.3 Header compression and decompression -----------------------------------------------------


def test_4_3_1_invalid_header_block(peer: Peer) -> None:
    peer.send(raw_frame(HEADERS, 0x5, 1, b"\x40"))
    expect_connection_error(peer, COMPRESSION_ERROR)


def test_4_3_2_priority_inside_header_block(peer: Peer) -> None:
    peer.request(1, end_stream=False, end_headers=False)
    peer.priority(1)
    peer.continuation(1, dummy(1))
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_4_3_3_headers_to_other_stream_inside_header_block(peer: Peer) -> None:
    peer.request(1, end_stream=False, end_headers=False)
    peer.request(3)
    peer.continuation(1, dummy(1))
    expect_connection_error(peer, PROTOCOL_ERROR)


# -- 5.1 Stream states ----------------------------------------------------------------------------


def test_5_1_1_idle_data(peer: Peer) -> None:
    peer.data(1, b"test")
    expect_stream_error(peer, PROTOCOL_ERROR, STREAM_CLOSED)


def test_5_1_2_idle_rst_stream(peer: Peer) -> None:
    peer.rst_stream(1, CANCEL)
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_5_1_3_idle_window_update(peer: Peer) -> None:
    peer.window_update(1, 100)
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_5_1_4_idle_continuation(peer: Peer) -> None:
    peer.continuation(1, peer.request_headers())
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_5_1_5_half_closed_remote_data(peer: Peer) -> None:
    peer.request(1)
    peer.data(1, b"test")
    expect_stream_error(peer, STREAM_CLOSED)


def test_5_1_6_half_closed_remote_headers(peer: Peer) -> None:
    peer.request(1)
    peer.request(1)
    expect_stream_error(peer, STREAM_CLOSED)


def test_5_1_7_half_closed_remote_continuation(peer: Peer) -> None:
    block = peer.encode(peer.request_headers())
    peer.headers(1, block)
    peer.continuation(1, block)
    expect_stream_error(peer, STREAM_CLOSED, PROTOCOL_ERROR)


def test_5_1_8_closed_data_after_rst_stream(peer: Peer) -> None:
    peer.request(1, end_stream=False)
    peer.rst_stream(1, CANCEL)
    peer.data(1, b"test")
    expect_stream_error(peer, STREAM_CLOSED)


def test_5_1_9_closed_headers_after_rst_stream(peer: Peer) -> None:
    peer.request(1, end_stream=False)
    peer.rst_stream(1, CANCEL)
    peer.request(1)
    expect_stream_error(peer, STREAM_CLOSED)


def test_5_1_10_closed_continuation_after_rst_stream(peer: Peer) -> None:
    peer.request(1, end_stream=False)
    peer.rst_stream(1, CANCEL)
    peer.continuation(1, dummy(1))
    expect_stream_error(peer, STREAM_CLOSED, PROTOCOL_ERROR)


def test_5_1_11_closed_data(peer: Peer) -> None:
    peer.request(1)
    expect_stream_close(peer)
    peer.data(1, b"test")
    expect_stream_error(peer, STREAM_CLOSED)


def test_5_1_12_closed_headers(peer: Peer) -> None:
    block = peer.encode(peer.request_headers())
    peer.headers(1, block)
    expect_stream_close(peer)
    peer.headers(1, block)
    expect_connection_error(peer, STREAM_CLOSED)


def test_5_1_13_closed_continuation(peer: Peer) -> None:
    peer.request(1)
    expect_stream_close(peer)
    peer.continuation(1, dummy(1))
    expect_connection_error(peer, STREAM_CLOSED, PROTOCOL_ERROR)


# -- 5.1.1 Stream identifiers ---------------------------------------------------------------------


def test_5_1_1_1_even_stream_id(peer: Peer) -> None:
    peer.request(2)
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_5_1_1_2_smaller_stream_id(peer: Peer) -> None:
    block = peer.encode(peer.request_headers())
    peer.headers(5, block)
    peer.headers(3, block)
    expect_connection_error(peer, PROTOCOL_ERROR)


# -- 5.1.2 Stream concurrency ---------------------------------------------------------------------


def test_5_1_2_1_over_max_concurrent_streams(peer: Peer) -> None:
    limit = peer.settings[MAX_CONCURRENT_STREAMS]
    peer.send_settings((INITIAL_WINDOW_SIZE, 0))
    block = peer.encode(peer.request_headers())
    for i in range(limit + 1):  # a write each, as h2spec sends them
        peer.send(raw_frame(HEADERS, END_HEADERS | 0x1, 2 * i + 1, block))
    expect_stream_error(peer, PROTOCOL_ERROR, REFUSED_STREAM)


# -- 5.3.1 Stream dependencies --------------------------------------------------------------------


def test_5_3_1_1_headers_depending_on_itself(peer: Peer) -> None:
    peer.headers(1, peer.request_headers(), priority=(1, False, 255))
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_5_3_1_2_priority_depending_on_itself(peer: Peer) -> None:
    peer.priority(1, 1, 255)
    expect_stream_error(peer, PROTOCOL_ERROR)


# -- 5.4.1 Connection error handling --------------------------------------------------------------


def test_5_4_1_1_invalid_ping_closes(peer: Peer) -> None:
    peer.send(raw_frame(PING, 0, 3, b"\0" * 8))
    expect_connection_close(peer)


def test_5_4_1_2_invalid_ping_goaway_first(peer: Peer) -> None:
    """h2spec's strict case: a GOAWAY comes before the close."""
    peer.send(raw_frame(PING, 0, 3, b"\0" * 8))
    frame = expect_frame(peer, GOAWAY)
    assert frame.error_code == PROTOCOL_ERROR, frame


# -- 5.5 Extending HTTP/2 -------------------------------------------------------------------------


def test_5_5_1_unknown_extension_frame(peer: Peer) -> None:
    peer.send(raw_frame(0x16, 0, 0, b"\0" * 8))
    peer.ping()
    expect_ping_ack(peer, b"\0" * 8)


def test_5_5_2_unknown_extension_frame_inside_header_block(peer: Peer) -> None:
    peer.request(1, end_headers=False)
    peer.send(raw_frame(0x16, 0, 0, b"\0" * 8))
    expect_connection_error(peer, PROTOCOL_ERROR)


# -- 6.1 DATA -------------------------------------------------------------------------------------


def test_6_1_1_data_on_stream_0(peer: Peer) -> None:
    peer.data(0, b"test")
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_1_2_data_on_half_closed_remote(peer: Peer) -> None:
    peer.request(1, b"POST")
    peer.data(1, b"test")
    expect_stream_error(peer, STREAM_CLOSED)


def test_6_1_3_data_with_invalid_pad_length(peer: Peer) -> None:
    peer.request(1, b"POST", extra=[(b"content-length", b"4")], end_stream=False)
    peer.send(raw_frame(DATA, 0x9, 1, b"\x06Test"))
    expect_connection_error(peer, PROTOCOL_ERROR)


# -- 6.2 HEADERS ----------------------------------------------------------------------------------


def test_6_2_1_headers_then_priority(peer: Peer) -> None:
    peer.request(1, end_stream=False, end_headers=False)
    peer.priority(1)
    peer.continuation(1, dummy(1))
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_2_2_headers_to_other_stream_inside_header_block(peer: Peer) -> None:
    peer.request(1, end_stream=False, end_headers=False)
    peer.request(3)
    peer.continuation(1, dummy(1))
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_2_3_headers_on_stream_0(peer: Peer) -> None:
    peer.request(0)
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_2_4_headers_with_invalid_pad_length(peer: Peer) -> None:
    block = peer.encode(peer.request_headers())
    payload = bytes([len(block) + 2]) + block
    peer.send(raw_frame(HEADERS, 0x0D, 1, payload))
    expect_stream_error(peer, PROTOCOL_ERROR)


# -- 6.3 PRIORITY ---------------------------------------------------------------------------------


def test_6_3_1_priority_on_stream_0(peer: Peer) -> None:
    peer.priority(0)
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_3_2_priority_of_wrong_length(peer: Peer) -> None:
    peer.request(1, end_stream=False)
    peer.send(raw_frame(PRIORITY, 0, 1, b"\x80\0\0\x01"))
    expect_stream_error(peer, FRAME_SIZE_ERROR)


# -- 6.4 RST_STREAM -------------------------------------------------------------------------------


def test_6_4_1_rst_stream_on_stream_0(peer: Peer) -> None:
    peer.rst_stream(0, CANCEL)
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_4_2_rst_stream_on_idle_stream(peer: Peer) -> None:
    peer.rst_stream(1, CANCEL)
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_4_3_rst_stream_of_wrong_length(peer: Peer) -> None:
    peer.request(1, end_stream=False)
    peer.send(raw_frame(RST_STREAM, 0, 1, b"\0\0\0"))
    expect_connection_error(peer, FRAME_SIZE_ERROR)


# -- 6.5 SETTINGS ---------------------------------------------------------------------------------


def test_6_5_1_settings_ack_with_payload(peer: Peer) -> None:
    peer.send(raw_frame(SETTINGS, 0x1, 0, b"\0"))
    expect_connection_error(peer, FRAME_SIZE_ERROR)


def test_6_5_2_settings_on_a_stream(peer: Peer) -> None:
    peer.send(raw_frame(SETTINGS, 0, 1, b"\0\x03\0\0\0\x64"))
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_5_3_settings_of_wrong_length(peer: Peer) -> None:
    peer.send(raw_frame(SETTINGS, 0, 0, b"\0\x03\0"))
    expect_stream_error(peer, PROTOCOL_ERROR, FRAME_SIZE_ERROR)


# -- 6.5.2 Defined SETTINGS parameters ------------------------------------------------------------


def test_6_5_2_1_enable_push_not_0_or_1(peer: Peer) -> None:
    peer.send_settings((ENABLE_PUSH, 2))
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_5_2_2_initial_window_size_too_large(peer: Peer) -> None:
    peer.send_settings((INITIAL_WINDOW_SIZE, 2**31))
    expect_connection_error(peer, FLOW_CONTROL_ERROR)


def test_6_5_2_3_max_frame_size_too_small(peer: Peer) -> None:
    peer.send_settings((MAX_FRAME_SIZE, 16383))
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_5_2_4_max_frame_size_too_large(peer: Peer) -> None:
    peer.send_settings((MAX_FRAME_SIZE, 2**24))
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_5_2_5_unknown_setting(peer: Peer) -> None:
    peer.send_settings((0xFF, 1))
    peer.ping()
    expect_ping_ack(peer, b"\0" * 8)


# -- 6.5.3 Settings synchronization ---------------------------------------------------------------


def test_6_5_3_1_settings_applied_in_order(peer: Peer) -> None:
    peer.send_settings((INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 1))
    expect_settings_ack(peer)
    peer.request(1)
    expect_data_length(peer, 1)


def test_6_5_3_2_settings_acknowledged(peer: Peer) -> None:
    peer.send_settings((ENABLE_PUSH, 0))
    expect_settings_ack(peer)


# -- 6.7 PING -------------------------------------------------------------------------------------


def test_6_7_1_ping(peer: Peer) -> None:
    peer.ping(PING_DATA)
    expect_ping_ack(peer, PING_DATA)


def test_6_7_2_ping_ack_not_answered(peer: Peer) -> None:
    peer.ping(b"invalid\0", ack=True)
    peer.ping(PING_DATA)
    expect_ping_ack(peer, PING_DATA)


def test_6_7_3_ping_on_a_stream(peer: Peer) -> None:
    peer.send(raw_frame(PING, 0, 1, b"\0" * 8))
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_7_4_ping_of_wrong_length(peer: Peer) -> None:
    peer.send(raw_frame(PING, 0, 0, b"\0" * 6))
    expect_connection_error(peer, FRAME_SIZE_ERROR)


# -- 6.8 GOAWAY -----------------------------------------------------------------------------------


def test_6_8_1_goaway_on_a_stream(peer: Peer) -> None:
    peer.send(raw_frame(GOAWAY, 0, 1, b"\0" * 8))
    expect_connection_error(peer, PROTOCOL_ERROR)


# -- 6.9 WINDOW_UPDATE ----------------------------------------------------------------------------


def test_6_9_1_window_update_0_on_connection(peer: Peer) -> None:
    peer.window_update(0, 0)
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_9_2_window_update_0_on_stream(peer: Peer) -> None:
    peer.request(1, end_stream=False)
    peer.window_update(1, 0)
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_6_9_3_window_update_of_wrong_length(peer: Peer) -> None:
    peer.send(raw_frame(WINDOW_UPDATE, 0, 0, b"\0\0\x01"))
    expect_connection_error(peer, FRAME_SIZE_ERROR)


# -- 6.9.1 The flow-control window ----------------------------------------------------------------


def test_6_9_1_1_initial_window_of_1(peer: Peer) -> None:
    peer.send_settings((INITIAL_WINDOW_SIZE, 1))
    expect_settings_ack(peer)
    peer.request(1)
    expect_data_length(peer, 1)


def test_6_9_1_2_connection_window_overflow(peer: Peer) -> None:
    peer.window_update(0, 2**31 - 1)
    peer.window_update(0, 2**31 - 1)
    frame = expect_frame(peer, GOAWAY)
    assert frame.error_code == FLOW_CONTROL_ERROR, frame


def test_6_9_1_3_stream_window_overflow(peer: Peer) -> None:
    peer.request(1, end_stream=False)
    peer.window_update(1, 2**31 - 1)
    peer.window_update(1, 2**31 - 1)
    frame = expect_frame(peer, RST_STREAM)
    assert frame.stream_id == 1 and frame.error_code == FLOW_CONTROL_ERROR, frame


# -- 6.9.2 Initial flow-control window size -------------------------------------------------------


def test_6_9_2_1_initial_window_change_applies_to_open_streams(peer: Peer) -> None:
    peer.send_settings((INITIAL_WINDOW_SIZE, 0))
    expect_settings_ack(peer)
    peer.request(1)
    peer.send_settings((INITIAL_WINDOW_SIZE, 1))
    expect_data_length(peer, 1)


def test_6_9_2_2_negative_window(peer: Peer) -> None:
    peer.send_settings((INITIAL_WINDOW_SIZE, 3))
    expect_settings_ack(peer)
    peer.request(1)
    expect_frame(peer, DATA)  # 3 octets: the window is 0
    peer.send_settings((INITIAL_WINDOW_SIZE, 2))
    expect_settings_ack(peer)  # the window is -1
    peer.window_update(1, 2)  # and now 1
    expect_data_length(peer, 1)


def test_6_9_2_3_initial_window_size_too_large(peer: Peer) -> None:
    peer.send(raw_frame(SETTINGS, 0, 0, b"\0\x04\x80\0\0\0"))
    expect_connection_error(peer, FLOW_CONTROL_ERROR)


# -- 6.10 CONTINUATION ----------------------------------------------------------------------------


def test_6_10_1_multiple_continuation(peer: Peer) -> None:
    peer.request(1, end_headers=False)
    peer.continuation(1, dummy(1), end_headers=False)
    peer.continuation(1, dummy(1))
    expect_headers(peer, 1)


def test_6_10_2_continuation_then_other_frame(peer: Peer) -> None:
    peer.request(1, b"POST", end_stream=False, end_headers=False)
    peer.continuation(1, dummy(1), end_headers=False)
    peer.data(1, b"test")
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_10_3_continuation_on_stream_0(peer: Peer) -> None:
    peer.request(1, end_headers=False)
    peer.continuation(0, dummy(1))
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_10_4_continuation_after_end_headers(peer: Peer) -> None:
    peer.request(1)
    peer.continuation(1, dummy(1))
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_10_5_continuation_after_ended_continuation(peer: Peer) -> None:
    peer.request(1, end_headers=False)
    peer.continuation(1, dummy(1))
    peer.continuation(1, dummy(1))
    expect_connection_error(peer, PROTOCOL_ERROR)


def test_6_10_6_continuation_after_data(peer: Peer) -> None:
    peer.request(1, b"POST", end_stream=False)
    peer.data(1, b"test")
    peer.continuation(1, dummy(1), end_headers=False)
    peer.continuation(0, dummy(1))
    expect_connection_error(peer, PROTOCOL_ERROR)


# -- 7 Error codes --------------------------------------------------------------------------------


def test_7_1_goaway_with_unknown_code(peer: Peer) -> None:
    peer.goaway(0, 0xFF)
    peer.ping(PING_DATA)
    expect_ping_ack_or_close(peer, PING_DATA)


def test_7_2_rst_stream_with_unknown_code(peer: Peer) -> None:
    peer.request(1, b"POST", end_stream=False)
    peer.rst_stream(1, 0xFF)
    peer.ping()
    expect_ping_ack_or_close(peer, b"\0" * 8)


# -- 8.1 HTTP request/response exchange -----------------------------------------------------------


def test_8_1_1_trailers_without_end_stream(peer: Peer) -> None:
    peer.request(1, b"POST", end_stream=False)
    peer.data(1, b"test", end_stream=False)
    peer.headers(1, [(b"x-test", b"ok")], end_stream=False)
    expect_stream_error(peer, PROTOCOL_ERROR)


# -- 8.1.2 HTTP header fields ---------------------------------------------------------------------


def test_8_1_2_1_uppercase_field_name(peer: Peer) -> None:
    peer.request(1, extra=[(b"X-TEST", b"ok")])
    expect_stream_error(peer, PROTOCOL_ERROR)


# -- 8.1.2.1 Pseudo-header fields -----------------------------------------------------------------


def test_8_1_2_1_1_unknown_pseudo_header(peer: Peer) -> None:
    peer.request(1, extra=[(b":test", b"ok")])
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_8_1_2_1_2_response_pseudo_header_in_request(peer: Peer) -> None:
    peer.request(1, extra=[(b":status", b"200")])
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_8_1_2_1_3_pseudo_header_in_trailers(peer: Peer) -> None:
    peer.request(1, b"POST", end_stream=False)
    peer.data(1, b"test", end_stream=False)
    peer.headers(1, [(b":method", b"POST")], end_stream=False)
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_8_1_2_1_4_pseudo_header_after_regular(peer: Peer) -> None:
    peer.headers(1, [(b"x-test", b"ok"), *peer.request_headers()])
    expect_stream_error(peer, PROTOCOL_ERROR)


# -- 8.1.2.2 Connection-specific header fields ----------------------------------------------------


def test_8_1_2_2_1_connection_header(peer: Peer) -> None:
    peer.request(1, extra=[(b"connection", b"keep-alive")])
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_8_1_2_2_2_te_other_than_trailers(peer: Peer) -> None:
    peer.request(1, extra=[(b"trailers", b"test"), (b"te", b"trailers, deflate")])
    expect_stream_error(peer, PROTOCOL_ERROR)


# -- 8.1.2.3 Request pseudo-header fields ---------------------------------------------------------


def _without(peer: Peer, name: bytes) -> list[tuple[bytes, bytes]]:
    return [field for field in peer.request_headers() if field[0] != name]


def _twice(peer: Peer, name: bytes) -> list[tuple[bytes, bytes]]:
    headers = peer.request_headers()
    return headers + [field for field in headers if field[0] == name]


def test_8_1_2_3_1_empty_path(peer: Peer) -> None:
    headers = peer.request_headers()
    headers[2] = (b":path", b"")
    peer.headers(1, headers)
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_8_1_2_3_2_no_method(peer: Peer) -> None:
    peer.headers(1, _without(peer, b":method"))
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_8_1_2_3_3_no_scheme(peer: Peer) -> None:
    peer.headers(1, _without(peer, b":scheme"))
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_8_1_2_3_4_no_path(peer: Peer) -> None:
    peer.headers(1, _without(peer, b":path"))
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_8_1_2_3_5_method_twice(peer: Peer) -> None:
    peer.headers(1, _twice(peer, b":method"))
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_8_1_2_3_6_scheme_twice(peer: Peer) -> None:
    peer.headers(1, _twice(peer, b":scheme"))
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_8_1_2_3_7_path_twice(peer: Peer) -> None:
    peer.headers(1, _twice(peer, b":path"))
    expect_stream_error(peer, PROTOCOL_ERROR)


# -- 8.1.2.6 Malformed requests and responses -----------------------------------------------------


def test_8_1_2_6_1_content_length_above_data(peer: Peer) -> None:
    peer.request(1, b"POST", extra=[(b"content-length", b"1")], end_stream=False)
    peer.data(1, b"test")
    expect_stream_error(peer, PROTOCOL_ERROR)


def test_8_1_2_6_2_content_length_above_sum_of_data(peer: Peer) -> None:
    peer.request(1, b"POST", extra=[(b"content-length", b"1")], end_stream=False)
    peer.data(1, b"test", end_stream=False)
    peer.data(1, b"test")
    expect_stream_error(peer, PROTOCOL_ERROR)


# -- 8.2 Server push ------------------------------------------------------------------------------


def test_8_2_1_push_promise_from_client(peer: Peer) -> None:
    block = peer.encode(peer.request_headers())
    peer.send(raw_frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 3) + block))
    expect_connection_error(peer, PROTOCOL_ERROR)
