"""Trusting reverse proxies: client address, scheme and host from proxy headers.

Behind a reverse proxy the TCP peer is the proxy, not the client.  Proxies
report the original client, scheme and host in ``Forwarded`` (RFC 7239) or
in the de-facto ``X-Forwarded-For``/``-Proto``/``-Host`` headers.  Those
headers are only believable when the *direct peer* is a proxy we trust; from
anyone else they are attacker-controlled and ignored.

Which hop is the client?  Every proxy appends the address it received the
request from, so the list grows to the right and only the entries appended by
trusted proxies can be believed.  We walk the list from the right, skipping
addresses of trusted proxies; the first untrusted address is the client.  (The
leftmost entry, which many servers use, is whatever the client chose to send.)
If every hop is trusted the leftmost one is used.

``Forwarded`` wins over the ``X-Forwarded-*`` family when present, and when it
is present the ``X-Forwarded-*`` headers are not consulted at all -- not even
if ``Forwarded`` is unparseable, because a client could otherwise send a
broken ``Forwarded`` to make us fall back to an ``X-Forwarded-For`` the proxy
merely passed through.  Conversely, a proxy that only speaks
``X-Forwarded-*`` must strip client-sent ``Forwarded`` headers (most do not by
default!), or the client controls the result.

Nothing here raises on hostile input: malformed values are ignored (and logged
at DEBUG), leaving the scope as the socket described it.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pounce.logs.escape import escape_for_log

__all__ = [
    "ProxyHeaderSettings",
    "ProxyTrust",
    "apply_proxy_headers",
    "apply_trusted_proxy_headers",
]

_log = logging.getLogger("pounce.error")

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_VALID_PROTOS = frozenset({"http", "https", "ws", "wss"})
_WEBSOCKET_SCHEME = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_HTTP_SCHEME = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# Deliberately stricter than RFC 3986 reg-name: DNS names (letters, digits,
# "-", "." and the "_" seen in the wild) only.  Anything else in a host that
# frameworks will paste into absolute URLs is more likely an attack than a
# real proxy's output.
_HOST_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._~-]{0,252})")
_PORT_RE = re.compile(r"[0-9]{1,5}")
# Obfuscated identifiers (RFC 7239 section 6.3): "_" followed by ALPHA/DIGIT/./_/-.
_OBFUSCATED_RE = re.compile(r"_[A-Za-z0-9._-]+")

# A Forwarded value with balanced quoted-strings, and its elements/pairs.
# Possessive quantifiers keep these linear even on hostile input (no
# backtracking), and they run in C, so a huge header costs little.
_FORWARDED_BALANCED_RE = re.compile(r'(?:[^"]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
_FORWARDED_ELEMENT_RE = re.compile(r'(?:[^,"]++|"(?:[^"\\]++|\\.)*+")++', re.DOTALL)
_FORWARDED_PAIR_RE = re.compile(r'(?:[^;"]++|"(?:[^"\\]++|\\.)*+")++', re.DOTALL)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class ProxyHeaderSettings(Protocol):
    """The ``ServerConfig`` field :meth:`ProxyTrust.from_config` reads."""

    @property
    def forwarded_allow_ips(self) -> Sequence[str] | str: ...


def _parse_ip(text: str) -> _IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _restore_trust(
    exact: frozenset[str],
    networks: tuple[tuple[int, int, int], ...],
    trust_all: bool,
    unix: bool,
) -> ProxyTrust:
    trust = ProxyTrust(())
    object.__setattr__(trust, "_exact", exact)
    object.__setattr__(trust, "_networks", networks)
    object.__setattr__(trust, "_trust_all", trust_all)
    object.__setattr__(trust, "_unix", unix)
    return trust


class ProxyTrust:
    """Which direct peers (and intermediate hops) are trusted proxies.

    Built once from ``forwarded_allow_ips`` and immutable afterwards: a
    frozenset of exact addresses (checked first -- the common case is one
    proxy at a fixed address) and a tuple of ``(version, network, mask)``
    integers for CIDR ranges.  Integers rather than ``ip_network`` objects
    because those fill in cached properties lazily, i.e. they mutate on first
    use; plain ints make :meth:`trusts` free of shared mutable state on
    free-threaded Python.  Nothing is cached per address, for the same reason.

    Entries: IPv4/IPv6 addresses, CIDR networks, ``"*"`` (trust everyone) and
    ``"unix"`` (trust peers on a Unix socket, whose client is ``None``).  A
    single comma-separated string is accepted too, as on the command line.
    """

    __slots__ = ("_exact", "_networks", "_trust_all", "_unix")

    _exact: frozenset[str]
    _networks: tuple[tuple[int, int, int], ...]
    _trust_all: bool
    _unix: bool

    def __init__(self, allowed: Iterable[str] | str = ("127.0.0.1",)) -> None:
        entries = allowed.split(",") if isinstance(allowed, str) else allowed
        exact: set[str] = set()
        networks: list[tuple[int, int, int]] = []
        trust_all = unix = False
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if entry == "*":
                trust_all = True
            elif entry.lower() == "unix":
                unix = True
            elif "/" in entry:
                try:
                    network = ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(
                        f"forwarded_allow_ips: {entry!r} is not an IP address or network"
                    ) from None
                if network.prefixlen == network.max_prefixlen:
                    exact.add(str(network.network_address))
                else:
                    networks.append(
                        (network.version, int(network.network_address), int(network.netmask))
                    )
            else:
                address = _parse_ip(entry)
                if address is None:
                    raise ValueError(
                        f"forwarded_allow_ips: {entry!r} is not an IP address or network"
                    )
                exact.add(str(address))
        object.__setattr__(self, "_exact", frozenset(exact))
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_trust_all", trust_all)
        object.__setattr__(self, "_unix", unix or trust_all)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ProxyTrust is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with the events a worker process sends its parent (ConnectionInfo holds
        # one): rebuilt from its parts, since the usual slot restore would call __setattr__.
        return (_restore_trust, (self._exact, self._networks, self._trust_all, self._unix))

    @classmethod
    def from_config(cls, config: ProxyHeaderSettings) -> ProxyTrust:
        """Build from ``config.forwarded_allow_ips``.

        Whether proxy headers are applied at all is ``config.proxy_headers``;
        the pipeline checks that before calling :func:`apply_proxy_headers`.
        """
        return cls(config.forwarded_allow_ips)

    @property
    def trust_all(self) -> bool:
        """True when ``"*"`` was given."""
        return self._trust_all

    def __repr__(self) -> str:
        parts = sorted(self._exact)
        for version, net, mask in self._networks:
            prefix = bin(mask).count("1")
            network_type = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
            parts.append(str(network_type((net, prefix))))
        if self._unix and not self._trust_all:
            parts.append("unix")
        if self._trust_all:
            parts = ["*"]
        return f"ProxyTrust({parts!r})"

    def trusts(self, host: str | None) -> bool:
        """Is ``host`` (an IP string; None for a Unix-socket peer) trusted?"""
        if self._trust_all:
            return True
        if host is None:
            return self._unix
        if host in self._exact:
            return True
        address = _parse_ip(host)
        if address is None:
            return False
        return self._trusts_address(address)

    def _trusts_address(self, address: _IPAddress) -> bool:
        if self._trust_all:
            return True
        # IPv4 peers on a dual-stack socket show up as ::ffff:a.b.c.d; judge
        # them by the IPv4 address an operator would have written.
        if isinstance(address, ipaddress.IPv6Address):
            mapped = address.ipv4_mapped
            if mapped is not None:
                address = mapped
            elif address.scope_id is not None:
                address = ipaddress.IPv6Address(int(address))
        if str(address) in self._exact:
            return True
        version = address.version
        value = int(address)
        return any(
            version == net_version and value & mask == net
            for net_version, net, mask in self._networks
        )


def _canonical_ip(address: _IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _parse_node(text: str) -> tuple[_IPAddress, int] | None:
    """Parse a hop: ``ip``, ``ip:port``, ``[ipv6]``, ``[ipv6]:port`` or bare IPv6.

    Returns None for anything that is not an IP address (``unknown``,
    obfuscated ``_identifiers``, garbage).  An obfuscated or missing port is 0.
    """
    text = text.strip()
    if not text:
        return None
    port_text = ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
        address = _parse_ip(host)
        if address is None or address.version != 6:
            return None
    else:
        colons = text.count(":")
        if colons == 1:
            host, _, port_text = text.partition(":")
        else:  # IPv4/name without port, or an unbracketed IPv6 address
            host = text
        address = _parse_ip(host)
        if address is None or (colons == 1 and address.version != 4):
            return None
    if not port_text:
        return address, 0
    if _PORT_RE.fullmatch(port_text):
        port = int(port_text)
        return (address, port) if port <= 65535 else None
    if _OBFUSCATED_RE.fullmatch(port_text):
        return address, 0
    return None


def _valid_authority(value: str) -> str | None:
    """Return ``value`` if it is a safe ``host[:port]`` authority, else None."""
    if not value or len(value) > 261:
        return None
    if value.startswith("["):
        end = value.find("]")
        if "%" in value or end < 0:
            return None
        literal = _parse_ip(value[1:end])
        if literal is None or literal.version != 6:
            return None
        rest = value[end + 1 :]
    else:
        host, _, rest = value.partition(":")
        if not _HOST_NAME_RE.fullmatch(host):
            return None
        rest = ":" + rest if rest or value.endswith(":") else ""
    if rest:
        if not rest.startswith(":"):
            return None
        port = rest[1:]
        if not _PORT_RE.fullmatch(port) or int(port) > 65535:
            return None
    return value


def _split_authority(authority: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        end = authority.index("]")
        host, rest = authority[: end + 1], authority[end + 1 :]
    else:
        host, _, port = authority.partition(":")
        rest = ":" + port if port else ""
    return host, (int(rest[1:]) if rest else None)


def _unquote(value: str) -> str | None:
    """Value of a Forwarded parameter: a token or a quoted-string (unescaped)."""
    value = value.strip()
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"'):
            return None
        return _QUOTED_PAIR_RE.sub(r"\1", value[1:-1])
    if '"' in value:
        return None
    return value


def _parse_forwarded_element(element: str) -> dict[str, str] | None:
    """``for=...;proto=...;host=...`` into a dict; None if malformed.

    RFC 7239 forbids repeating a parameter within one element; such an element
    is treated as malformed rather than picking one of the values.
    """
    params: dict[str, str] = {}
    for pair in _FORWARDED_PAIR_RE.findall(element):
        if not pair.strip():
            continue
        name, sep, raw = pair.partition("=")
        name = name.strip().lower()
        if not sep or not _TOKEN_RE.fullmatch(name) or name in params:
            return None
        value = _unquote(raw)
        if value is None:
            return None
        params[name] = value
    return params


_WANTED_HEADERS = frozenset(
    (b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
)


def _debug(message: str, value: str) -> None:
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug("proxy headers: %s: %s", message, escape_for_log(value))


class _Hop:
    """What we believe about the hop chosen as the client (plain, per request)."""

    __slots__ = ("client", "host", "proto")

    def __init__(
        self, client: tuple[_IPAddress, int] | None, proto: str | None, host: str | None
    ) -> None:
        self.client = client
        self.proto = proto
        self.host = host


def _from_forwarded(values: list[str], trust: ProxyTrust) -> _Hop | None:
    joined = ", ".join(values)
    if not _FORWARDED_BALANCED_RE.fullmatch(joined):
        _debug("unbalanced quotes in Forwarded", joined)
        return None
    elements = [e for e in _FORWARDED_ELEMENT_RE.findall(joined) if e.strip()]
    if not elements:
        return None
    chosen: dict[str, str] | None = None
    chosen_node: tuple[_IPAddress, int] | None = None
    # With "*" every hop is trusted and the walk would end at the leftmost
    # element anyway; go straight there instead of parsing a long chain.
    walk = elements[:1] if trust.trust_all else reversed(elements)
    for element in walk:
        params = _parse_forwarded_element(element)
        if params is None:
            _debug("malformed Forwarded element", element)
            chosen, chosen_node = {}, None
            break
        node = _parse_node(params["for"]) if "for" in params else None
        chosen, chosen_node = params, node
        # "unknown", obfuscated and garbage identifiers cannot be trusted: the
        # walk stops there, and the client address stays as it was.
        if node is None or not trust._trusts_address(node[0]):
            break
    if chosen is None:
        return None
    return _Hop(chosen_node, chosen.get("proto"), chosen.get("host"))


def _pick_aligned(values: list[str], hop_count: int, index: int) -> str | None:
    """The X-Forwarded-Proto/Host entry for hop ``index`` of ``hop_count``.

    Proxies append to these lists in step with X-Forwarded-For, so they are
    aligned from the right.  A shorter list (typically a single value set by
    the edge proxy) is clamped to its leftmost entry; extra entries on the left
    of a longer list are what the client sent itself and are never chosen.
    Without X-Forwarded-For the rightmost (nearest proxy's) value is used.
    """
    entries = [v.strip() for v in ",".join(values).split(",")]
    entries = [v for v in entries if v]
    if not entries:
        return None
    if hop_count == 0:
        return entries[-1]
    position = len(entries) - (hop_count - index)
    return entries[max(position, 0)]


def _from_x_forwarded(found: dict[bytes, list[str]], trust: ProxyTrust) -> _Hop | None:
    hops = [v.strip() for v in ",".join(found.get(b"x-forwarded-for", ())).split(",")]
    hops = [v for v in hops if v]
    client: tuple[_IPAddress, int] | None = None
    index = 0
    # Under "*" the answer is the leftmost hop; skip walking the whole list.
    start = min(0, len(hops) - 1) if trust.trust_all else len(hops) - 1
    for index in range(start, -1, -1):
        client = _parse_node(hops[index])
        if client is None:
            _debug("unusable X-Forwarded-For entry", hops[index])
            break
        if not trust._trusts_address(client[0]):
            break
    proto_values = found.get(b"x-forwarded-proto")
    host_values = found.get(b"x-forwarded-host")
    if not hops and proto_values is None and host_values is None:
        return None
    return _Hop(
        client,
        _pick_aligned(proto_values, len(hops), index) if proto_values else None,
        _pick_aligned(host_values, len(hops), index) if host_values else None,
    )


def apply_proxy_headers(scope: dict[str, Any], trust: ProxyTrust) -> None:
    """Rewrite ``scope`` from proxy headers if the direct peer is trusted.

    Updates, each only when the corresponding value is present and valid:

    * ``scope["client"]`` -> ``(ip, port)`` of the first untrusted hop (port 0
      when not given);
    * ``scope["scheme"]`` from the proto (``http``/``https``/``ws``/``wss``,
      mapped to ``ws``/``wss`` for WebSocket scopes and back for HTTP ones);
    * ``scope["server"]`` and the ``host`` request header from the forwarded
      host, so frameworks build URLs with the public name.

    Never raises on header content; invalid values are simply not applied.
    """
    client = scope.get("client")
    if trust.trusts(client[0] if client else None):
        apply_trusted_proxy_headers(scope, trust)


def apply_trusted_proxy_headers(scope: dict[str, Any], trust: ProxyTrust) -> None:
    """:func:`apply_proxy_headers` for a peer already known to be trusted.

    A connection's peer does not change, so a protocol checks it once per connection and
    calls this for each of its requests.
    """
    headers = scope.get("headers") or ()
    if not isinstance(headers, list | tuple):  # ASGI allows any iterable
        headers = list(headers)
    # ASGI scopes carry lower-cased names, so there is no per-header lower() here. latin-1
    # maps bytes 1:1, so nothing can fail to decode; validation later rejects anything
    # non-ASCII where it matters.
    wanted = _WANTED_HEADERS
    found: dict[bytes, list[str]] = {}
    for name, value in headers:
        if name in wanted:
            found.setdefault(name, []).append(value.decode("latin-1"))
    if not found:
        return
    if b"forwarded" in found:
        hop = _from_forwarded(found[b"forwarded"], trust)
    else:
        hop = _from_x_forwarded(found, trust)
    if hop is None:
        return

    if hop.client is not None:
        address, port = hop.client
        scope["client"] = (_canonical_ip(address), port)

    scheme = scope.get("scheme", "http")
    if hop.proto is not None:
        proto = hop.proto.strip().lower()
        if proto in _VALID_PROTOS:
            is_websocket = scope.get("type") == "websocket"
            scheme = (_WEBSOCKET_SCHEME if is_websocket else _HTTP_SCHEME)[proto]
            scope["scheme"] = scheme
        else:
            _debug("ignored forwarded proto", hop.proto)

    if hop.host is not None:
        authority = _valid_authority(hop.host.strip())
        if authority is None:
            _debug("ignored forwarded host", hop.host)
            return
        host, explicit_port = _split_authority(authority)
        server_host = host[1:-1] if host.startswith("[") else host
        if explicit_port is None:
            explicit_port = _DEFAULT_PORTS.get(scheme, 80)
        scope["server"] = (server_host, explicit_port)
        host_header = authority.encode("ascii")
        rewritten = [(n, v) for n, v in headers if n.lower() != b"host"]
        rewritten.append((b"host", host_header))
        scope["headers"] = rewritten
