"""The opening handshake: HTTP/1.1 upgrade rules, subprotocols, permessage-deflate offers."""

from __future__ import annotations

import pytest

from pounce.protocols.websocket.handshake import (
    HandshakeError,
    accept_key,
    check_http1_upgrade,
    negotiate_deflate,
    parse_subprotocols,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example


def good_headers(**replace: bytes | None) -> list[tuple[bytes, bytes]]:
    base = {
        b"host": b"example.com",
        b"upgrade": b"websocket",
        b"connection": b"Upgrade",
        b"sec-websocket-key": KEY,
        b"sec-websocket-version": b"13",
    }
    for name, value in replace.items():
        key = name.replace("_", "-").encode()
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return list(base.items())


def test_accept_key_matches_the_rfc_example() -> None:
    assert accept_key(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert check_http1_upgrade("GET", "1.1", good_headers()).accept == accept_key(KEY)


@pytest.mark.parametrize(
    ("method", "version", "changes", "status"),
    [
        ("POST", "1.1", {}, 400),
        ("GET", "1.0", {}, 400),
        ("GET", "1.1", {"upgrade": b"h2c"}, 400),
        ("GET", "1.1", {"connection": b"keep-alive"}, 400),
        ("GET", "1.1", {"sec_websocket_version": None}, 426),
        ("GET", "1.1", {"sec_websocket_version": b"8"}, 426),
        ("GET", "1.1", {"sec_websocket_version": b"13, 8"}, 426),
        ("GET", "1.1", {"sec_websocket_key": None}, 400),
        ("GET", "1.1", {"sec_websocket_key": b"not base64!"}, 400),
        ("GET", "1.1", {"sec_websocket_key": b"c2hvcnQ="}, 400),  # 5 bytes
        ("GET", "1.1", {"sec_websocket_key": b"AAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, 400),  # 21 bytes
        ("GET", "1.1", {"sec_websocket_key": b"\xff\xfe"}, 400),
    ],
)
def test_invalid_handshakes(
    method: str, version: str, changes: dict[str, bytes | None], status: int
) -> None:
    with pytest.raises(HandshakeError) as info:
        check_http1_upgrade(method, version, good_headers(**changes))
    assert info.value.status == status
    if status == 426:
        assert info.value.headers == [(b"sec-websocket-version", b"13")]


def test_two_keys_are_refused() -> None:
    headers = [*good_headers(), (b"sec-websocket-key", KEY)]
    with pytest.raises(HandshakeError) as info:
        check_http1_upgrade("GET", "1.1", headers)
    assert info.value.status == 400


def test_token_lists_are_matched_case_insensitively() -> None:
    headers = good_headers(upgrade=b"WebSocket", connection=b"keep-alive, UPGRADE")
    check_http1_upgrade("GET", "1.1", headers)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"chat, superchat"], ["chat", "superchat"]),
        ([b"chat", b"v2"], ["chat", "v2"]),
        ([b" , ,chat ,\t"], ["chat"]),
        ([b""], []),
        ([b"caf\xc3\xa9, \xff\xfe"], ["caf\xc3\xa9", "\xff\xfe"]),
    ],
)
def test_subprotocols_never_crash(values: list[bytes], expected: list[str]) -> None:
    headers = [(b"sec-websocket-protocol", value) for value in values]
    assert parse_subprotocols(headers) == expected


@pytest.mark.parametrize(
    ("offer", "response"),
    [
        (b"permessage-deflate", b"permessage-deflate; server_max_window_bits=12"),
        (
            b"permessage-deflate; client_max_window_bits",
            b"permessage-deflate; server_max_window_bits=12",
        ),
        (
            b"permessage-deflate; client_max_window_bits=10",
            b"permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
        ),
        (
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            b"server_max_window_bits=12",
        ),
        (
            b'permessage-deflate; server_max_window_bits="10"',
            b"permessage-deflate; server_max_window_bits=10",
        ),
        # The first acceptable offer wins; invalid ones are skipped.
        (
            b"permessage-deflate; unknown=1, permessage-deflate; server_max_window_bits=9",
            b"permessage-deflate; server_max_window_bits=9",
        ),
        (b"x-webkit-deflate-frame, permessage-deflate",
         b"permessage-deflate; server_max_window_bits=12"),
        (b"permessage-deflate; server_max_window_bits=8", None),  # zlib cannot do 8
        (b"permessage-deflate; server_max_window_bits=16", None),
        (b"permessage-deflate; client_max_window_bits=7", None),
        (b"permessage-deflate; server_max_window_bits", None),  # needs a value
        (b"permessage-deflate; server_no_context_takeover=1", None),
        (b"permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
        (b"permessage-deflate;", None),
        (b"\xff\xfe; \x00", None),
        (b"", None),
    ],
)
def test_deflate_negotiation(offer: bytes, response: bytes | None) -> None:
    params = negotiate_deflate([(b"sec-websocket-extensions", offer)])
    assert (params.response if params is not None else None) == response


def test_deflate_params_follow_the_offer() -> None:
    params = negotiate_deflate([(
        b"sec-websocket-extensions",
        b"permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
    )])
    assert params is not None
    assert params.client_no_context_takeover and not params.server_no_context_takeover
    assert params.client_max_window_bits == 9
    assert params.server_max_window_bits == 12
