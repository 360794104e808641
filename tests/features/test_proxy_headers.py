"""Proxy headers: who is trusted, which hop is the client, what gets rewritten."""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pounce.features.proxy_headers import ProxyTrust, apply_proxy_headers

PEER = ("10.0.0.1", 5000)
SERVER = ("127.0.0.1", 8000)


def make_scope(
    headers: list[tuple[bytes, bytes]],
    *,
    client: tuple[str, int] | None = PEER,
    scope_type: str = "http",
) -> dict[str, Any]:
    return {
        "type": scope_type,
        "scheme": "ws" if scope_type == "websocket" else "http",
        "client": client,
        "server": SERVER,
        "headers": [(b"host", b"internal:8000"), *headers],
    }


def run(
    headers: list[tuple[bytes, bytes]],
    trust: str | tuple[str, ...] = "10.0.0.0/8",
    **kwargs: Any,
) -> dict[str, Any]:
    scope = make_scope(headers, **kwargs)
    apply_proxy_headers(scope, ProxyTrust(trust))
    return scope


def host_header(scope: dict[str, Any]) -> list[bytes]:
    return [v for n, v in scope["headers"] if n == b"host"]


# --------------------------------------------------------------------------- ProxyTrust


@pytest.mark.parametrize(
    ("allowed", "host", "expected"),
    [
        (("127.0.0.1",), "127.0.0.1", True),
        (("127.0.0.1",), "127.0.0.2", False),
        (("127.0.0.1",), "::ffff:127.0.0.1", True),
        (("10.0.0.0/8",), "10.255.1.2", True),
        (("10.0.0.0/8",), "11.0.0.1", False),
        (("192.168.1.7/24",), "192.168.1.200", True),  # host bits are tolerated
        (("fd00::/8",), "fd12:3456::1", True),
        (("fd00::/8",), "fe80::1", False),
        (("fd00::/8",), "10.0.0.1", False),
        (("::/0",), "10.0.0.1", False),  # an IPv6 range never matches IPv4
        (("::1",), "0:0:0:0:0:0:0:1", True),  # non-canonical spelling
        (("fe80::/10",), "fe80::1%eth0", True),
        (("10.0.0.5/32",), "10.0.0.5", True),
        (("*",), "203.0.113.9", True),
        (("*",), None, True),
        (("unix",), None, True),
        (("unix",), "127.0.0.1", False),
        (("127.0.0.1",), None, False),
        (("10.0.0.0/8",), "not-an-ip", False),
        (("10.0.0.0/8",), "", False),
        ("127.0.0.1, 10.0.0.0/8", "10.1.1.1", True),
    ],
)
def test_trusts(allowed: tuple[str, ...] | str, host: str | None, expected: bool) -> None:
    assert ProxyTrust(allowed).trusts(host) is expected


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.0/33", "1.2.3", "::g"])
def test_trust_rejects_invalid_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        ProxyTrust((entry,))


def test_trust_is_immutable_and_has_repr() -> None:
    trust = ProxyTrust(("10.0.0.0/8", "fd00::/8", "127.0.0.1", "unix"))
    with pytest.raises(AttributeError):
        trust._exact = frozenset()  # type: ignore[misc]
    assert repr(trust) == "ProxyTrust(['127.0.0.1', '10.0.0.0/8', 'fd00::/8', 'unix'])"
    assert repr(ProxyTrust("*")) == "ProxyTrust(['*'])"


def test_trust_from_config() -> None:
    trust = ProxyTrust.from_config(SimpleNamespace(forwarded_allow_ips=("10.0.0.0/8",)))
    assert trust.trusts("10.9.9.9")
    assert not trust.trust_all


# --------------------------------------------------------------------------- X-Forwarded-*

FWD = b"forwarded"
XFF = b"x-forwarded-for"
XFP = b"x-forwarded-proto"
XFH = b"x-forwarded-host"


@pytest.mark.parametrize(
    ("headers", "trust", "client", "expected_client"),
    [
        # untrusted peer: headers ignored
        ([(XFF, b"1.2.3.4")], "192.168.0.1", PEER, PEER),
        # trusted exact peer
        ([(XFF, b"1.2.3.4")], "10.0.0.1", PEER, ("1.2.3.4", 0)),
        # CIDR v4 trust
        ([(XFF, b"1.2.3.4")], "10.0.0.0/8", PEER, ("1.2.3.4", 0)),
        # CIDR v6 trust
        ([(XFF, b"2001:db8::5")], "fd00::/8", ("fd00::1", 443), ("2001:db8::5", 0)),
        # trust all
        ([(XFF, b"1.2.3.4")], "*", ("203.0.113.1", 1), ("1.2.3.4", 0)),
        ([(XFF, b"6.6.6.6, 1.2.3.4")], "*", ("203.0.113.1", 1), ("6.6.6.6", 0)),
        ([(FWD, b"for=6.6.6.6, for=1.2.3.4")], "*", ("203.0.113.1", 1), ("6.6.6.6", 0)),
        # multi-hop, partial trust: the client-supplied 6.6.6.6 is not believed
        ([(XFF, b"6.6.6.6, 1.2.3.4, 10.0.0.2")], "10.0.0.0/8", PEER, ("1.2.3.4", 0)),
        # every hop trusted: leftmost
        ([(XFF, b"10.0.0.7, 10.0.0.2")], "10.0.0.0/8", PEER, ("10.0.0.7", 0)),
        # duplicated header lines are one list
        ([(XFF, b"6.6.6.6, 1.2.3.4"), (XFF, b"10.0.0.2")], "10.0.0.0/8", PEER, ("1.2.3.4", 0)),
        ([(XFF, b"6.6.6.6"), (XFF, b"10.0.0.2")], "10.0.0.0/8", PEER, ("6.6.6.6", 0)),
        # ports, brackets
        ([(XFF, b"1.2.3.4:8080")], "10.0.0.0/8", PEER, ("1.2.3.4", 8080)),
        ([(XFF, b"[2001:db8::1]:8443")], "10.0.0.0/8", PEER, ("2001:db8::1", 8443)),
        ([(XFF, b"[2001:db8::1]")], "10.0.0.0/8", PEER, ("2001:db8::1", 0)),
        ([(XFF, b"::ffff:1.2.3.4")], "10.0.0.0/8", PEER, ("1.2.3.4", 0)),
        # garbage: never raises, client stays the peer
        ([(XFF, b"not-an-ip")], "10.0.0.0/8", PEER, PEER),
        ([(XFF, b"1.2.3.4:abc")], "10.0.0.0/8", PEER, PEER),
        ([(XFF, b"1.2.3.4:99999")], "10.0.0.0/8", PEER, PEER),
        ([(XFF, b"[1.2.3.4]:80")], "10.0.0.0/8", PEER, PEER),
        ([(XFF, b"[::1")], "10.0.0.0/8", PEER, PEER),
        ([(XFF, b"unknown")], "10.0.0.0/8", PEER, PEER),
        ([(XFF, b", , ,")], "10.0.0.0/8", PEER, PEER),
        ([(XFF, b"")], "10.0.0.0/8", PEER, PEER),
        ([(XFF, b""), (XFP, b"https")], "*", PEER, PEER),
        ([(XFF, "\u00e9\u00e9".encode())], "10.0.0.0/8", PEER, PEER),
        # garbage to the left of the first untrusted hop does not matter
        ([(XFF, b"junk, 1.2.3.4")], "10.0.0.0/8", PEER, ("1.2.3.4", 0)),
        # a garbage hop added "behind" a trusted proxy stops the walk
        ([(XFF, b"1.2.3.4, junk")], "10.0.0.0/8", PEER, PEER),
    ],
)
def test_x_forwarded_for(
    headers: list[tuple[bytes, bytes]],
    trust: str,
    client: tuple[str, int],
    expected_client: tuple[str, int],
) -> None:
    assert run(headers, trust, client=client)["client"] == expected_client


@pytest.mark.parametrize(
    ("headers", "scope_type", "expected_scheme"),
    [
        ([(XFF, b"1.2.3.4"), (XFP, b"https")], "http", "https"),
        ([(XFF, b"1.2.3.4"), (XFP, b"HTTPS")], "http", "https"),
        ([(XFF, b"1.2.3.4"), (XFP, b" https ")], "http", "https"),
        ([(XFF, b"1.2.3.4"), (XFP, b"javascript")], "http", "http"),
        ([(XFF, b"1.2.3.4"), (XFP, b"")], "http", "http"),
        ([(XFP, b"https")], "http", "https"),  # proto without XFF
        # one value per hop: use the chosen hop's value
        ([(XFF, b"1.2.3.4, 10.0.0.2"), (XFP, b"https, http")], "http", "https"),
        ([(XFF, b"1.2.3.4, 10.0.0.2"), (XFP, b"http, https")], "http", "http"),
        # single value set by the edge proxy applies to the chosen hop
        ([(XFF, b"1.2.3.4, 10.0.0.2, 10.0.0.3"), (XFP, b"https")], "http", "https"),
        # WebSocket mapping
        ([(XFF, b"1.2.3.4"), (XFP, b"https")], "websocket", "wss"),
        ([(XFF, b"1.2.3.4"), (XFP, b"http")], "websocket", "ws"),
        ([(XFF, b"1.2.3.4"), (XFP, b"wss")], "websocket", "wss"),
        ([(XFF, b"1.2.3.4"), (XFP, b"wss")], "http", "https"),
        ([(XFF, b"1.2.3.4"), (XFP, b"ws")], "http", "http"),
    ],
)
def test_x_forwarded_proto(
    headers: list[tuple[bytes, bytes]], scope_type: str, expected_scheme: str
) -> None:
    assert run(headers, scope_type=scope_type)["scheme"] == expected_scheme


@pytest.mark.parametrize(
    ("value", "proto", "expected_server", "expected_host"),
    [
        (b"example.com", b"https", ("example.com", 443), b"example.com"),
        (b"example.com", b"http", ("example.com", 80), b"example.com"),
        (b"example.com:8443", b"https", ("example.com", 8443), b"example.com:8443"),
        (b"[2001:db8::1]:9000", b"http", ("2001:db8::1", 9000), b"[2001:db8::1]:9000"),
        (b"[2001:db8::1]", b"https", ("2001:db8::1", 443), b"[2001:db8::1]"),
        # aligned from the right with X-Forwarded-For: the extra leftmost entry is
        # what the client sent itself, the proxy appended the real one
        (b"evil.example, api.example.com", b"https", ("api.example.com", 443), b"api.example.com"),
        (b"my_host.local", b"http", ("my_host.local", 80), b"my_host.local"),
    ],
)
def test_x_forwarded_host(
    value: bytes, proto: bytes, expected_server: tuple[str, int], expected_host: bytes
) -> None:
    scope = run([(XFF, b"1.2.3.4"), (XFP, proto), (XFH, value)])
    assert scope["server"] == expected_server
    assert host_header(scope) == [expected_host]


@pytest.mark.parametrize(
    "value",
    [
        b"evil.com/path",
        b"evil.com?x=1",
        b"evil.com#frag",
        b"user@evil.com",
        b"a b",
        b"a\r\nb",
        b"a\tb",
        b"evil.com\x00",
        b"evil.com:",
        b"evil.com:99999",
        b"evil.com:80:80",
        b"evil.com:http",
        b"[::1",
        b"[1.2.3.4]",
        b"[fe80::1%eth0]",
        b"::1",
        b"\xc3\xa9vil.com",
        b"-",
        b"",
        b'"quoted"',
    ],
)
def test_x_forwarded_host_rejects_bad_authorities(value: bytes) -> None:
    scope = run([(XFF, b"1.2.3.4"), (XFH, value)])
    assert scope["server"] == SERVER
    assert host_header(scope) == [b"internal:8000"]
    assert scope["client"] == ("1.2.3.4", 0)  # the rest still applies


def test_forwarded_host_header_replaces_all_host_lines() -> None:
    scope = make_scope([(b"Host", b"second"), (XFH, b"public.example")])
    apply_proxy_headers(scope, ProxyTrust("10.0.0.0/8"))
    assert [v for n, v in scope["headers"] if n.lower() == b"host"] == [b"public.example"]


# --------------------------------------------------------------------------- Forwarded


@pytest.mark.parametrize(
    ("headers", "expected_client", "expected_scheme", "expected_server"),
    [
        (
            [(FWD, b'for="[2001:db8:cafe::17]:4711";proto=https;host=example.com')],
            ("2001:db8:cafe::17", 4711),
            "https",
            ("example.com", 443),
        ),
        ([(FWD, b"for=192.0.2.60;proto=http;by=203.0.113.43")], ("192.0.2.60", 0), "http", SERVER),
        ([(FWD, b'For="192.0.2.60:8080"')], ("192.0.2.60", 8080), "http", SERVER),
        ([(FWD, b'for="192.0.2.43:_port"')], ("192.0.2.43", 0), "http", SERVER),
        # unknown / obfuscated: client untouched, other parameters still apply
        ([(FWD, b"for=unknown;proto=https")], PEER, "https", SERVER),
        ([(FWD, b"for=_hidden;proto=https")], PEER, "https", SERVER),
        ([(FWD, b'for="_hidden:_port"')], PEER, "http", SERVER),
        # multiple hops, walk from the right
        (
            [(FWD, b"for=6.6.6.6, for=1.2.3.4;proto=https, for=10.0.0.2")],
            ("1.2.3.4", 0),
            "https",
            SERVER,
        ),
        # the same, split across header lines
        (
            [(FWD, b"for=6.6.6.6, for=1.2.3.4"), (FWD, b"for=10.0.0.2")],
            ("1.2.3.4", 0),
            "http",
            SERVER,
        ),
        # all trusted: leftmost
        ([(FWD, b"for=10.0.0.9, for=10.0.0.2")], ("10.0.0.9", 0), "http", SERVER),
        # takes precedence over X-Forwarded-*
        (
            [(FWD, b"for=1.2.3.4;proto=https"), (XFF, b"5.6.7.8"), (XFP, b"http")],
            ("1.2.3.4", 0),
            "https",
            SERVER,
        ),
        # quoted strings may contain separators
        ([(FWD, b'for="1.2.3.4";host="a.example:81"')], ("1.2.3.4", 0), "http", ("a.example", 81)),
        ([(FWD, b'for=1.2.3.4;ext="x,y;z=\\"w\\""')], ("1.2.3.4", 0), "http", SERVER),
        # garbage: nothing applied, and X-Forwarded-For is not a fallback
        ([(FWD, b'for="unterminated'), (XFF, b"6.6.6.6")], PEER, "http", SERVER),
        ([(FWD, b"for=1.2.3.4;for=5.6.7.8")], PEER, "http", SERVER),  # repeated parameter
        ([(FWD, b"for")], PEER, "http", SERVER),
        ([(FWD, b"=1.2.3.4")], PEER, "http", SERVER),
        ([(FWD, b'for=1.2.3.4 junk"x"')], PEER, "http", SERVER),
        ([(FWD, b";;;,,,")], PEER, "http", SERVER),
        ([(FWD, b"")], PEER, "http", SERVER),
        ([(FWD, b"for=[2001:db8::1]:80")], ("2001:db8::1", 80), "http", SERVER),
        ([(FWD, b"for=2001:db8::1")], ("2001:db8::1", 0), "http", SERVER),
        ([(FWD, b"for=1.2.3.4;proto=gopher")], ("1.2.3.4", 0), "http", SERVER),
        ([(FWD, b"for=1.2.3.4;host=evil.com/x")], ("1.2.3.4", 0), "http", SERVER),
        # a client's unterminated quote cannot swallow the proxy's element
        ([(FWD, b'for="6.6.6.6, for=1.2.3.4')], PEER, "http", SERVER),
        # malformed element appended behind the trusted proxy stops the walk
        ([(FWD, b"for=1.2.3.4, for")], PEER, "http", SERVER),
    ],
)
def test_forwarded(
    headers: list[tuple[bytes, bytes]],
    expected_client: tuple[str, int],
    expected_scheme: str,
    expected_server: tuple[str, int],
) -> None:
    scope = run(headers)
    assert scope["client"] == expected_client
    assert scope["scheme"] == expected_scheme
    assert scope["server"] == expected_server


def test_forwarded_websocket() -> None:
    scope = run([(FWD, b"for=1.2.3.4;proto=https;host=chat.example")], scope_type="websocket")
    assert scope["scheme"] == "wss"
    assert scope["server"] == ("chat.example", 443)
    assert host_header(scope) == [b"chat.example"]


# --------------------------------------------------------------------------- misc


@pytest.mark.parametrize(
    ("trust", "expected"),
    [("unix", ("1.2.3.4", 0)), ("*", ("1.2.3.4", 0)), ("127.0.0.1", None)],
)
def test_unix_socket_peer(trust: str, expected: tuple[str, int] | None) -> None:
    assert run([(XFF, b"1.2.3.4")], trust, client=None)["client"] == expected


def test_no_proxy_headers_leaves_scope_alone() -> None:
    scope = make_scope([(b"accept", b"*/*")])
    before = dict(scope)
    apply_proxy_headers(scope, ProxyTrust("*"))
    assert scope == before
    assert scope["headers"] is before["headers"]


def test_tuple_headers_are_accepted() -> None:
    # ASGI scopes carry lower-cased header names (the server lower-cases them), so names
    # are matched as given; any iterable of pairs is accepted.
    scope = make_scope([])
    scope["headers"] = ((b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-host", b"h.example"))
    apply_proxy_headers(scope, ProxyTrust("10.0.0.0/8"))
    assert scope["client"] == ("1.2.3.4", 0)
    assert host_header(scope) == [b"h.example"]


_header_names = st.sampled_from([FWD, XFF, XFP, XFH, b"host"])
_header_values = st.one_of(
    st.binary(max_size=80),
    st.lists(
        st.sampled_from(
            [
                "for=",
                "proto=",
                "host=",
                '"',
                "\\",
                ";",
                ",",
                "[",
                "]",
                ":",
                "_x",
                "1.2.3.4",
                "::1",
                "unknown",
                "https",
                "ws",
                "a.b",
                "=",
                " ",
                "\r\n",
                "%",
            ]
        ),
        max_size=20,
    ).map(lambda parts: "".join(parts).encode()),
)


@settings(max_examples=400, deadline=None)
@given(
    headers=st.lists(st.tuples(_header_names, _header_values), max_size=6),
    scope_type=st.sampled_from(["http", "websocket"]),
)
def test_hostile_headers_never_raise(headers: list[tuple[bytes, bytes]], scope_type: str) -> None:
    scope = make_scope(headers, scope_type=scope_type)
    apply_proxy_headers(scope, ProxyTrust("*"))
    client = scope["client"]
    assert client is None or (isinstance(client[0], str) and 0 <= client[1] <= 65535)
    assert scope["scheme"] in {"http", "https", "ws", "wss"}
    host, port = scope["server"]
    assert host.isascii() and host.isprintable() and 0 < port <= 65535


def test_trust_is_consistent_across_threads() -> None:
    trust = ProxyTrust(("10.0.0.0/8", "fd00::/8", "192.168.1.1", "unix"))
    cases = [
        ("10.1.2.3", True),
        ("11.1.2.3", False),
        ("fd00::42", True),
        ("fe80::1", False),
        ("192.168.1.1", True),
        ("192.168.1.2", False),
        ("::ffff:10.0.0.1", True),
        (None, True),
        ("garbage", False),
    ]
    errors: list[str] = []
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        for _ in range(500):
            for host, expected in cases:
                if trust.trusts(host) is not expected:
                    errors.append(f"{host!r}: expected {expected}")
            scope = make_scope([(XFF, b"6.6.6.6, 1.2.3.4, 10.0.0.2"), (XFP, b"https")])
            apply_proxy_headers(scope, trust)
            if scope["client"] != ("1.2.3.4", 0) or scope["scheme"] != "https":
                errors.append(f"scope: {scope['client']} {scope['scheme']}")

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(old_interval)
    assert errors == []


def test_proxy_trust_survives_pickling() -> None:
    # Worker processes pickle it inside the ConnectionInfo of the events they send the parent.
    import pickle

    trust = ProxyTrust("10.0.0.0/8, 127.0.0.1, unix")
    copy = pickle.loads(pickle.dumps(trust))
    assert copy.trusts("10.1.2.3") and copy.trusts("127.0.0.1")
    assert not copy.trusts("192.0.2.1")
    with pytest.raises(AttributeError, match="immutable"):
        copy._exact = frozenset()  # type: ignore[misc]
