"""TLS with the stdlib :mod:`ssl` module: the server's SSLContext, handshakes, the ASGI ``tls``
extension.

Why one builder (:func:`create_ssl_context`): ``pounce check``, the start-up check in the main
process and every worker must load the certificate the same way, or a mistake that ``check``
accepts could still stop a worker.  Every worker builds its own context after it starts: an
``SSLContext`` cannot be pickled to a process worker, and a worker started by a rolling reload
(``kill -HUP``) reads the certificate files again, so a renewed certificate is served by the new
generation while connections already open keep the context they were accepted with.

Why handshakes go through ``loop.connect_accepted_socket(ssl=...)`` for every connection, also
on listening sockets (``pounce.server.accept.TLSAcceptor``): asyncio's
``create_server(ssl=...)`` swallows a failed or timed-out handshake without telling anyone (it
only logs in asyncio debug mode, with a traceback), so the server could neither log the peer
nor tell a plain-HTTP client on the TLS port from a broken one. ``connect_accepted_socket``
raises the handshake's exception to its caller, where :func:`log_handshake_failure` turns it
into one line. Each handshake runs in its own task on the worker's loop with
``--timeout-ssl-handshake``, so a client that never finishes its handshake only ever holds its
own connection, never the accept path.

Defaults are the stdlib's secure ones (TLS 1.2 minimum, OpenSSL's cipher selection) plus no
compression and no renegotiation; ``--ssl-ciphers`` replaces the cipher list only when given.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import ssl
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from pounce.errors import StartupError

if TYPE_CHECKING:
    from pounce.config import ServerConfig

__all__ = [
    "DEFAULT_ALPN_PROTOCOLS",
    "TLS_VERSIONS",
    "ServerSSLContext",
    "create_ssl_context",
    "http2_installed",
    "log_handshake_failure",
    "offered_alpn",
    "peer_of",
    "rfc4514_name",
    "tls_extension",
]

logger = logging.getLogger("pounce.error")

#: Offered to clients through ALPN, in order of preference.  HTTP/2 support adds ``h2`` in front.
DEFAULT_ALPN_PROTOCOLS: Final = ("http/1.1",)

#: ``SSLObject.version()`` -> the protocol version number of the TLS specifications.
TLS_VERSIONS: Final = {
    "SSLv3": 0x0300,
    "TLSv1": 0x0301,
    "TLSv1.1": 0x0302,
    "TLSv1.2": 0x0303,
    "TLSv1.3": 0x0304,
}

# The protocols a server may use whose minimum version can be raised; the others pin one
# version the user asked for explicitly.
_NEGOTIATING_PROTOCOLS: Final = frozenset({int(ssl.PROTOCOL_TLS), int(ssl.PROTOCOL_TLS_SERVER)})


class ServerSSLContext(ssl.SSLContext):
    """An ``SSLContext`` that also carries what each connection's ``tls`` extension needs.

    ``server_cert_pem`` is the leaf certificate of ``--ssl-certfile`` (read once, here, instead
    of once per connection); ``cipher_suites`` maps the OpenSSL names of the suites this context
    can negotiate to their IANA numbers.
    """

    server_cert_pem: str | None
    cipher_suites: dict[str, int]


class _PasswordNeeded(Exception):
    """The key is encrypted and no password was given (instead of OpenSSL's TTY prompt)."""


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and hang a server under a process
    # manager; fail with a message instead.
    raise _PasswordNeeded


def _check_readable(label: str, path: str | None) -> None:
    if path is None:
        return
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise StartupError(
            f"cannot read {label} {path!r}: {exc.strerror or exc}; check the path and its "
            "permissions"
        ) from None


def _first_pem_certificate(path: str) -> str | None:
    """The first certificate of a PEM chain file, normalised; None when there is none."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        return None
    try:
        der = ssl.PEM_cert_to_DER_cert(text[start : stop + len(end)])
    except ValueError:
        return None
    return ssl.DER_cert_to_PEM_cert(der)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _load_error(config: ServerConfig, exc: ssl.SSLError) -> StartupError:
    # OpenSSL often reports only "PEM lib" (no reason): look at the files to say more.
    reason = exc.reason or ""
    certfile = config.ssl_certfile or ""
    key_text = _read_text(config.ssl_keyfile or certfile)
    files = f"--ssl-certfile {certfile!r}"
    if config.ssl_keyfile:
        files += f" / --ssl-keyfile {config.ssl_keyfile!r}"
    if reason == "KEY_VALUES_MISMATCH":
        hint = "the private key does not belong to the certificate; pass the matching key"
    elif "-----BEGIN CERTIFICATE-----" not in _read_text(certfile):
        hint = "--ssl-certfile holds no PEM certificate; pass the PEM certificate (chain)"
    elif "PRIVATE KEY-----" not in key_text:
        hint = (
            "no PEM private key found; pass it with --ssl-keyfile, or put it in the "
            "--ssl-certfile file"
        )
    elif config.ssl_keyfile_password is not None and "ENCRYPTED" in key_text:
        # PKCS#8 ("BEGIN ENCRYPTED PRIVATE KEY") and legacy PEM ("Proc-Type: 4,ENCRYPTED").
        hint = "wrong --ssl-keyfile-password for the encrypted private key"
    else:
        hint = f"{reason or exc}; check that the files are PEM and that the key matches"
    return StartupError(f"cannot load the TLS certificate ({files}): {hint}")


def http2_installed() -> bool:
    """True when the ``h2`` package (the ``pounce[h2]`` extra) can be imported."""
    try:
        return importlib.util.find_spec("h2") is not None
    except (ImportError, ValueError):
        return False


def offered_alpn(config: ServerConfig) -> tuple[str, ...]:
    """What ALPN offers, in the server's order of preference, for ``--http``.

    ``h2`` first when HTTP/2 is on (``--http auto`` with the extra installed, or ``--http
    h2``), so a client that speaks both gets HTTP/2; ``http/1.1`` unless ``--http h2``.
    """
    if config.http in ("fast", "h11") or not http2_installed():
        return DEFAULT_ALPN_PROTOCOLS
    if config.http == "h2":
        return ("h2",)
    return ("h2", "http/1.1")


def create_ssl_context(
    config: ServerConfig, *, alpn_protocols: Sequence[str] | None = None
) -> ServerSSLContext:
    """Build the server's ``SSLContext`` from *config* (``ssl_certfile`` must be set).

    Raises :class:`~pounce.errors.StartupError` with one line saying what is wrong and what to
    do: an unreadable file, a key that does not match, a wrong or missing password, CA
    certificates or a cipher string OpenSSL refuses.  *alpn_protocols* is what ALPN offers.
    """
    certfile = config.ssl_certfile
    if certfile is None:
        raise StartupError("TLS needs a certificate; pass --ssl-certfile (and --ssl-keyfile)")
    _check_readable("--ssl-certfile", certfile)
    _check_readable("--ssl-keyfile", config.ssl_keyfile)
    _check_readable("--ssl-ca-certs", config.ssl_ca_certs)
    if config.ssl_version == int(ssl.PROTOCOL_TLS_CLIENT):
        raise StartupError(
            "--ssl-version PROTOCOL_TLS_CLIENT is for clients; use PROTOCOL_TLS_SERVER "
            "(the default)"
        )
    with warnings.catch_warnings():
        # Pinned protocol versions (PROTOCOL_TLSv1_2 ...) are deprecated by the ssl module but
        # remain the meaning of Uvicorn's --ssl-version; honour them without a warning per
        # worker.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            context = ServerSSLContext(config.ssl_version)
        except (ValueError, ssl.SSLError) as exc:
            raise StartupError(
                f"--ssl-version {config.ssl_version} cannot be used here ({exc}); use "
                "PROTOCOL_TLS_SERVER (the default)"
            ) from None
        if config.ssl_version in _NEGOTIATING_PROTOCOLS:
            context.minimum_version = max(
                context.minimum_version, ssl.TLSVersion.TLSv1_2, key=_version_order
            )
    context.options |= ssl.OP_NO_COMPRESSION
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    password = config.ssl_keyfile_password
    try:
        context.load_cert_chain(
            certfile, config.ssl_keyfile, password if password is not None else _no_password
        )
    except _PasswordNeeded:
        raise StartupError(
            f"the private key in {config.ssl_keyfile or certfile!r} is encrypted; pass "
            "--ssl-keyfile-password (or POUNCE_SSL_KEYFILE_PASSWORD)"
        ) from None
    except ssl.SSLError as exc:
        raise _load_error(config, exc) from None
    context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    if config.ssl_ca_certs is not None:
        try:
            context.load_verify_locations(config.ssl_ca_certs)
        except ssl.SSLError as exc:
            raise StartupError(
                f"cannot load --ssl-ca-certs {config.ssl_ca_certs!r} "
                f"({exc.reason or exc}); pass a PEM file of CA certificates"
            ) from None
    if config.ssl_ciphers is not None:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise StartupError(
                f"--ssl-ciphers {config.ssl_ciphers!r} selects no cipher OpenSSL knows; "
                "see 'openssl ciphers' for valid strings, or drop it for secure defaults"
            ) from None
    if alpn_protocols is None:
        alpn_protocols = offered_alpn(config)
    if alpn_protocols:
        context.set_alpn_protocols(list(alpn_protocols))
    context.server_cert_pem = _first_pem_certificate(certfile)
    # OpenSSL ids of TLS suites are 0x0300XXXX with XXXX the IANA number; the negotiated suite
    # is always one this context offers, so this table is complete for its connections.
    context.cipher_suites = {
        cipher["name"]: cipher["id"] & 0xFFFF for cipher in context.get_ciphers()
    }
    _install_asyncio_filter()
    return context


def _version_order(version: ssl.TLSVersion) -> int:
    # MINIMUM_SUPPORTED / MAXIMUM_SUPPORTED are magic negative values; order them as "any".
    return int(version) if int(version) >= 0 else 0


# --------------------------------------------------------------------------- handshakes


def peer_of(sock: socket.socket) -> str:
    """``host:port`` of an accepted connection's peer, for log lines."""
    try:
        peer = sock.getpeername()
    except OSError:
        return "an unknown peer"
    if isinstance(peer, tuple):
        host = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
        return f"{host}:{peer[1]}"
    return "a unix socket peer"


def log_handshake_failure(exc: BaseException, peer: str, timeout: float) -> None:
    """One line for a handshake that did not complete, never a traceback.

    A plain-HTTP client on the TLS port is worth INFO (someone typed ``http://``); every other
    failure -- scanners, old TLS versions, refused client certificates, timeouts, resets -- is
    routine on a public port and logged at DEBUG.
    """
    if isinstance(exc, ssl.SSLError) and exc.reason == "HTTP_REQUEST":
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "Plain HTTP request on a TLS port from %s; closed it (use https://)", peer
            )
        return
    if not logger.isEnabledFor(logging.DEBUG):
        return
    if isinstance(exc, ssl.SSLError):
        detail = exc.reason or exc.strerror or str(exc)
        logger.debug("TLS handshake with %s failed: %s", peer, detail)
    elif isinstance(exc, ConnectionAbortedError) and "handshake" in str(exc):
        logger.debug("TLS handshake with %s timed out after %gs; closed it", peer, timeout)
    else:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        logger.debug(
            "TLS handshake with %s aborted: %s", peer, detail or type(exc).__name__
        )


class _HandshakeLogFilter(logging.Filter):
    """Drops asyncio's own records of failed handshakes (debug mode only, with tracebacks).

    :func:`log_handshake_failure` already said it in one line; in asyncio debug mode
    (``PYTHONASYNCIODEBUG=1``, ``-X dev``) the SSL protocol of asyncio and of uvloop logs the
    same failure again, as ``logger.debug("%r: %s", ssl_protocol, message, exc_info=True)``.
    """

    MESSAGES: Final = frozenset(
        {
            "SSL handshake failed",
            "SSL handshake failed on verifying the certificate",
            "Fatal error on transport",  # the handshake timeout (no exception attached)
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (
            isinstance(args, tuple)
            and len(args) == 2
            and type(args[0]).__name__ == "SSLProtocol"
            and args[1] in self.MESSAGES
        ):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is None or isinstance(exc, OSError))


_ASYNCIO_FILTER: Final = _HandshakeLogFilter()


def _install_asyncio_filter() -> None:
    # Idempotent: addFilter ignores a filter that is already installed.
    logging.getLogger("asyncio").addFilter(_ASYNCIO_FILTER)


# --------------------------------------------------------------------------- the tls extension

# RFC 4514 section 3 short names; the ssl module reports OpenSSL's long names.
_RFC4514_NAMES: Final = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
# Attributes without an RFC 4514 short name are written as their dotted OID.
_ATTRIBUTE_OIDS: Final = {
    "emailAddress": "1.2.840.113549.1.9.1",
    "serialNumber": "2.5.4.5",
    "surname": "2.5.4.4",
    "givenName": "2.5.4.42",
    "title": "2.5.4.12",
    "initials": "2.5.4.43",
    "generationQualifier": "2.5.4.44",
    "pseudonym": "2.5.4.65",
    "dnQualifier": "2.5.4.46",
    "businessCategory": "2.5.4.15",
    "postalCode": "2.5.4.17",
    "name": "2.5.4.41",
}
_ESCAPED: Final = frozenset('"+,;<>\\')


def _escape_rdn_value(value: str) -> str:
    out = []
    for i, char in enumerate(value):
        if char in _ESCAPED:
            out.append("\\" + char)
        elif char == "\0":
            out.append("\\00")
        elif (i == 0 and char in "# ") or (i == len(value) - 1 and char == " "):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def rfc4514_name(subject: Sequence[Sequence[tuple[str, str]]]) -> str:
    """RFC 4514 text of a distinguished name as ``SSLObject.getpeercert()['subject']`` gives it.

    RFC 4514 lists the most specific RDN first, the reverse of the certificate's order.
    """
    rdns = []
    for rdn in reversed(subject):
        parts = []
        for name, value in rdn:
            key = _RFC4514_NAMES.get(name) or _ATTRIBUTE_OIDS.get(name) or name
            parts.append(f"{key}={_escape_rdn_value(value)}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


def _client_chain(ssl_object: ssl.SSLObject) -> list[str]:
    """The client's certificate first, then the chain it sent, as PEM strings."""
    leaf = ssl_object.getpeercert(binary_form=True)
    if not leaf:
        return []
    getter = getattr(ssl_object, "get_unverified_chain", None)  # public from Python 3.13
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    ders: list[bytes] = []
    if getter is not None:
        for cert in getter() or ():
            if isinstance(cert, bytes):
                ders.append(cert)
            else:  # Python < 3.13: _ssl.Certificate objects
                ders.append(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
    if not ders or ders[0] != leaf:
        # OpenSSL leaves the peer's own certificate out of the server side's chain.
        ders.insert(0, leaf)
    return [ssl.DER_cert_to_PEM_cert(der) for der in ders]


def tls_extension(ssl_object: ssl.SSLObject, server_cert_pem: str | None) -> dict[str, Any]:
    """The ASGI ``tls`` scope extension of one TLS connection.

    Computed once per connection, after the handshake, and shared by every request on it.
    ``client_cert_error`` is always None: a client certificate that fails verification ends
    the handshake, so no request ever sees one.  ``cipher_suite`` is the IANA number; it is
    None only for a context not built by :func:`create_ssl_context` that negotiated a suite
    missing from its ``get_ciphers()``.
    """
    version = ssl_object.version()
    cipher = ssl_object.cipher()
    suite: int | None = None
    if cipher is not None:
        table = getattr(ssl_object.context, "cipher_suites", None)
        if table is None:
            table = {c["name"]: c["id"] & 0xFFFF for c in ssl_object.context.get_ciphers()}
        suite = table.get(cipher[0])
    chain = _client_chain(ssl_object)
    name: str | None = None
    if chain:
        peer = ssl_object.getpeercert()
        subject = peer.get("subject") if peer else None
        if subject:
            name = rfc4514_name(subject)  # type: ignore[arg-type]
    return {
        "server_cert": server_cert_pem,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": suite,
    }



