"""TLS through real sockets: handshakes, ALPN, mutual TLS, the ``tls`` scope extension,
start-up failures, stalled handshakes in every worker mode, plain HTTP on the TLS port, reload
with a renewed certificate."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tests.apps import hello, scope_json
from tests.helpers import propagating, wait_until

from pounce.config import ServerConfig
from pounce.errors import StartupError
from pounce.testing import RunningServer, serve_in_thread
from pounce.transport.tls import create_ssl_context, rfc4514_name
from pounce.workers.distributor import HANDOFF_LIMIT

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- certificates


@dataclass
class PKI:
    """A CA, the server's certificate and key files, and client certificates."""

    dir: Path
    ca: trustme.CA
    ca_file: Path
    server_chain: Path  # key + certificate chain in one file
    server_cert: Path
    server_key: Path
    server_cert_pem: str
    encrypted_key: Path
    client_chain: Path  # client key + chain, for Python clients
    client_cert: Path
    client_key: Path
    client_cert_pem: str
    other_client_chain: Path  # issued by a CA the server does not trust
    expired_client_chain: Path
    other_server_chain: Path  # a second server certificate (renewal)
    expired_server_chain: Path
    foreign_key: Path  # a key that belongs to no certificate here

    def client_context(self, *, chain: Path | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if chain is not None:
            context.load_cert_chain(str(chain))
        return context


def _leaf_pem(leaf: trustme.LeafCert) -> str:
    return leaf.cert_chain_pems[0].bytes().decode("ascii")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    base = tmp_path_factory.mktemp("pki")
    ca = trustme.CA(organization_name="Pounce Test CA")
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_and_cert_chain_pem.write_to_path(str(base / "server.pem"))
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(base / "server-cert.pem"), append=i > 0)
    server.private_key_pem.write_to_path(str(base / "server-key.pem"))
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    (base / "server-key-encrypted.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    client = ca.issue_cert(
        "client@example.com",
        common_name="Client, One+Two",
        organization_name="Pounce Users",
        organization_unit_name="QA",
    )
    client.private_key_and_cert_chain_pem.write_to_path(str(base / "client.pem"))
    client.cert_chain_pems[0].write_to_path(str(base / "client-cert.pem"))
    client.private_key_pem.write_to_path(str(base / "client-key.pem"))
    other_ca = trustme.CA()
    other_ca.issue_cert("intruder@example.com").private_key_and_cert_chain_pem.write_to_path(
        str(base / "other-client.pem")
    )
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    expired = ca.issue_cert(
        "late@example.com", not_before=past - datetime.timedelta(days=30), not_after=past
    )
    expired.private_key_and_cert_chain_pem.write_to_path(str(base / "expired-client.pem"))
    renewed = ca.issue_cert("127.0.0.1", "localhost", organization_name="Renewed")
    renewed.private_key_and_cert_chain_pem.write_to_path(str(base / "server2.pem"))
    expired_server = ca.issue_cert(
        "127.0.0.1", not_before=past - datetime.timedelta(days=30), not_after=past
    )
    expired_server.private_key_and_cert_chain_pem.write_to_path(str(base / "expired-server.pem"))
    other_ca.issue_cert("x").private_key_pem.write_to_path(str(base / "foreign-key.pem"))
    return PKI(
        dir=base,
        ca=ca,
        ca_file=base / "ca.pem",
        server_chain=base / "server.pem",
        server_cert=base / "server-cert.pem",
        server_key=base / "server-key.pem",
        server_cert_pem=_leaf_pem(server),
        encrypted_key=base / "server-key-encrypted.pem",
        client_chain=base / "client.pem",
        client_cert=base / "client-cert.pem",
        client_key=base / "client-key.pem",
        client_cert_pem=_leaf_pem(client),
        other_client_chain=base / "other-client.pem",
        expired_client_chain=base / "expired-client.pem",
        other_server_chain=base / "server2.pem",
        expired_server_chain=base / "expired-server.pem",
        foreign_key=base / "foreign-key.pem",
    )


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def propagating_loggers() -> Iterator[None]:
    """caplog listens on the root logger: make sure pounce's loggers reach it, then restore."""
    with propagating("pounce", "pounce.error", "asyncio"):
        yield


def port_of(running: RunningServer) -> int:
    return int(running.url.rsplit(":", 1)[1])


@dataclass
class Session:
    """What the client saw of one TLS connection."""

    alpn: str | None
    cipher: str
    server_cert: bytes


def tls_request(
    port: int,
    context: ssl.SSLContext,
    path: str = "/",
    *,
    timeout: float = 5.0,
) -> tuple[int, bytes, Session]:
    """One HTTP/1.1 request over a fresh TLS connection; returns status, body, the session."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        if not data:
            raise ConnectionError("closed without a response")
        cipher = sock.cipher()
        session = Session(
            sock.selected_alpn_protocol(),
            cipher[0] if cipher else "",
            sock.getpeercert(binary_form=True) or b"",
        )
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body, session


def read_response(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    """Read one Content-Length response from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before the response head"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")[1:]
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def handshake_fails(port: int, context: ssl.SSLContext) -> bool:
    """True when the server refuses the handshake (with TLS 1.3 the client may only learn it
    on its first read)."""
    try:
        status, _, _ = tls_request(port, context)
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return status == 0


def error_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pounce.error" and text in r.getMessage()]


# --------------------------------------------------------------------------- handshake, ALPN


def test_https_with_httpx(pki: PKI) -> None:
    with serve_in_thread(scope_json, ssl_certfile=str(pki.server_chain)) as running:
        assert running.url.startswith("https://127.0.0.1:")
        response = httpx.get(running.url + "/x", verify=pki.client_context())
    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"
    assert response.json()["scheme"] == "https"


def test_separate_key_file_and_alpn_offers_http11(pki: PKI) -> None:
    # --http fast: HTTP/1.1 only, so ALPN offers http/1.1 alone (HTTP/2: tests/protocols/http2).
    with serve_in_thread(
        hello, ssl_certfile=str(pki.server_cert), ssl_keyfile=str(pki.server_key), http="fast"
    ) as running:
        context = pki.client_context()
        context.set_alpn_protocols(["h2", "http/1.1"])
        status, body, sock = tls_request(port_of(running), context)
        assert (status, body) == (200, b"Hello, world!")
        assert sock.alpn == "http/1.1"
        # A client that offers only h2 gets no ALPN agreement (and no h2), and HTTP/1.1.
        context = pki.client_context()
        context.set_alpn_protocols(["h2"])
        status, _, sock = tls_request(port_of(running), context)
        assert status == 200
        assert sock.alpn is None


def test_server_side_alpn_is_readable_per_connection(pki: PKI) -> None:
    import asyncio
    from types import SimpleNamespace

    from pounce.transport.stream import connection_info

    config = ServerConfig(ssl_certfile=str(pki.server_chain))
    server_context = create_ssl_context(config, alpn_protocols=("h2", "http/1.1"))
    seen: list[str | None] = []

    class Record(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            info = connection_info(transport, SimpleNamespace(proxy_trust=None))  # type: ignore[arg-type]
            assert info.scheme == "https" and info.tls is not None
            seen.append(info.alpn)
            transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Record, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        for offer in (["http/1.1"], ["h2", "http/1.1"]):
            context = pki.client_context()
            context.set_alpn_protocols(offer)
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
            )
            writer.close()
        await asyncio.sleep(0.1)
        server.close()

    asyncio.run(main())
    assert seen == ["http/1.1", "h2"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_https_and_mutual_tls(pki: PKI) -> None:
    with serve_in_thread(
        scope_json,
        ssl_certfile=str(pki.server_chain),
        ssl_ca_certs=str(pki.ca_file),
        ssl_cert_reqs="optional",
    ) as running:
        base = ["curl", "-sS", "--cacert", str(pki.ca_file), "--max-time", "10"]
        plain = subprocess.run(
            [*base, "-w", "\n%{http_version}", running.url + "/"],
            capture_output=True, text=True, timeout=30, check=True,
        )
        body, version = plain.stdout.rsplit("\n", 1)
        assert version == "2"  # ALPN h2: the tls extension is the same over HTTP/2
        assert json.loads(body)["extensions"]["tls"]["client_cert_chain"] == []
        mutual = subprocess.run(
            [*base, "--cert", str(pki.client_cert), "--key", str(pki.client_key),
             running.url + "/"],
            capture_output=True, text=True, timeout=30, check=True,
        )
        tls = json.loads(mutual.stdout)["extensions"]["tls"]
        assert tls["client_cert_chain"][0] == pki.client_cert_pem


# --------------------------------------------------------------------------- the tls extension


def _cryptography_name(pem: str) -> str:
    return x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string()


def test_tls_scope_extension_with_mutual_tls(pki: PKI) -> None:
    with serve_in_thread(
        scope_json,
        ssl_certfile=str(pki.server_chain),
        ssl_ca_certs=str(pki.ca_file),
        ssl_cert_reqs=2,
    ) as running:
        context = pki.client_context(chain=pki.client_chain)
        status, body, sock = tls_request(port_of(running), context)
        assert status == 200
        tls = json.loads(body)["extensions"]["tls"]
        # The client's certificate first, then what its OpenSSL sent along: here the CA.
        ca_pem = pki.ca.cert_pem.bytes().decode("ascii")
        assert tls["client_cert_chain"] in ([pki.client_cert_pem],
                                            [pki.client_cert_pem, ca_pem])
        assert tls == {
            "server_cert": pki.server_cert_pem,
            "client_cert_chain": tls["client_cert_chain"],
            "client_cert_name": _cryptography_name(pki.client_cert_pem),
            "client_cert_error": None,
            "tls_version": 0x0304,
            "cipher_suite": {"TLS_AES_256_GCM_SHA384": 0x1302,
                             "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
                             "TLS_AES_128_GCM_SHA256": 0x1301}[sock.cipher],
        }
        assert tls["client_cert_name"] == (
            "CN=Client\\, One\\+Two,OU=QA,O=Pounce Users"
        )

        # TLS 1.2, with a suite chosen by the client: the IANA number of that suite.
        context = pki.client_context(chain=pki.client_chain)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
        status, body, sock = tls_request(port_of(running), context)
        tls = json.loads(body)["extensions"]["tls"]
        assert tls["tls_version"] == 0x0303
        assert tls["cipher_suite"] == {"ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B,
                                       "ECDHE-RSA-AES128-GCM-SHA256": 0xC02F}[sock.cipher]


def test_tls_extension_without_client_certificate_and_plain_http_has_none(pki: PKI) -> None:
    with serve_in_thread(scope_json, ssl_certfile=str(pki.server_chain)) as running:
        _status, body, _ = tls_request(port_of(running), pki.client_context())
    tls = json.loads(body)["extensions"]["tls"]
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["server_cert"] == pki.server_cert_pem
    with serve_in_thread(scope_json) as running:
        scope = httpx.get(running.url + "/").json()
    assert "tls" not in scope["extensions"]
    assert scope["scheme"] == "http"


def test_tls_extension_is_the_same_for_every_request_of_a_connection(pki: PKI) -> None:
    # Computed once per connection (ConnectionInfo); each request gets its own copy, so an
    # app that edits it cannot change what the next request sees.
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = repr(sorted(scope["extensions"]["tls"].items())).encode()
        scope["extensions"]["tls"]["tls_version"] = -1
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    with serve_in_thread(app, ssl_certfile=str(pki.server_chain)) as running:
        raw = socket.create_connection(("127.0.0.1", port_of(running)), timeout=5)
        sock = pki.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
        ids = []
        for _ in range(2):
            sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            ids.append(read_response(sock)[1])
        sock.close()
    assert ids[0] == ids[1]


def test_rfc4514_name_escapes_and_orders_like_cryptography() -> None:
    from cryptography.x509.oid import NameOID

    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "A;B<C>"),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "x@y.z"),
        x509.NameAttribute(NameOID.COMMON_NAME, "#lead"),
        x509.NameAttribute(NameOID.COMMON_NAME, 'tail "q"\\ '),
    ])
    # The shape SSLObject.getpeercert() gives: OpenSSL's long names, the certificate's order.
    subject = tuple(
        tuple((attribute.oid._name, str(attribute.value)) for attribute in rdn)
        for rdn in name.rdns
    )
    assert rfc4514_name(subject) == name.rfc4514_string()
    assert rfc4514_name(subject) == (
        'CN=tail \\"q\\"\\\\\\ ,CN=\\#lead,1.2.840.113549.1.9.1=x@y.z,O=A\\;B\\<C\\>,C=DE'
    )
    multi = ((("organizationName", "O"),), (("commonName", "a+b"), ("userId", " u")))
    assert rfc4514_name(multi) == "CN=a\\+b+UID=\\ u,O=O"


# --------------------------------------------------------------------------- mutual TLS


def test_mutual_tls_accepts_ca_signed_and_refuses_others(
    pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="pounce.error"), serve_in_thread(
        hello,
        ssl_certfile=str(pki.server_chain),
        ssl_ca_certs=str(pki.ca_file),
        ssl_cert_reqs="CERT_REQUIRED",
    ) as running:
        port = port_of(running)
        assert tls_request(port, pki.client_context(chain=pki.client_chain))[0] == 200
        assert handshake_fails(port, pki.client_context())  # no certificate
        assert handshake_fails(port, pki.client_context(chain=pki.other_client_chain))
        assert handshake_fails(port, pki.client_context(chain=pki.expired_client_chain))
        assert wait_until(lambda: len(error_lines(caplog, "TLS handshake with")) >= 3, 5)
    failures = error_lines(caplog, "TLS handshake with")
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in failures)
    text = " ".join(r.getMessage() for r in failures)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text
    assert "CERTIFICATE_VERIFY_FAILED" in text
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]


def test_optional_client_certificate(pki: PKI) -> None:
    with serve_in_thread(
        scope_json,
        ssl_certfile=str(pki.server_chain),
        ssl_ca_certs=str(pki.ca_file),
        ssl_cert_reqs="optional",
    ) as running:
        port = port_of(running)
        _, body, _ = tls_request(port, pki.client_context())
        assert json.loads(body)["extensions"]["tls"]["client_cert_name"] is None
        _, body, _ = tls_request(port, pki.client_context(chain=pki.client_chain))
        assert json.loads(body)["extensions"]["tls"]["client_cert_name"].startswith("CN=Client")


def test_cert_reqs_without_ca_file_is_a_config_error(pki: PKI) -> None:
    from pounce.config import ConfigError

    with pytest.raises(ConfigError, match="add --ssl-ca-certs"):
        ServerConfig(ssl_certfile=str(pki.server_chain), ssl_cert_reqs=2)


# --------------------------------------------------------------------------- keys and start-up


def test_encrypted_key_with_password(pki: PKI) -> None:
    with serve_in_thread(
        hello,
        ssl_certfile=str(pki.server_cert),
        ssl_keyfile=str(pki.encrypted_key),
        ssl_keyfile_password="s3cret",
    ) as running:
        assert tls_request(port_of(running), pki.client_context())[0] == 200


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"ssl_keyfile_password": "wrong"}, "wrong --ssl-keyfile-password"),
        ({}, "is encrypted; pass --ssl-keyfile-password"),
    ],
)
def test_encrypted_key_wrong_or_missing_password(
    pki: PKI, files: dict[str, str], message: str
) -> None:
    with pytest.raises(StartupError, match=message), serve_in_thread(
        hello, ssl_certfile=str(pki.server_cert), ssl_keyfile=str(pki.encrypted_key), **files
    ):
        pass  # pragma: no cover - start-up fails


def _start_failure(pki: PKI, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pounce", "pounce.examples.hello:app", "--port", "0",
         "--host", "127.0.0.1", *flags],
        check=False, capture_output=True, text=True, timeout=60, cwd=pki.dir,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--ssl-certfile", "missing.pem"), "cannot read --ssl-certfile 'missing.pem'"),
        (("--ssl-certfile", "server-cert.pem", "--ssl-keyfile", "foreign-key.pem"),
         "the private key does not belong to the certificate"),
        (("--ssl-certfile", "server-cert.pem", "--ssl-keyfile", "server-key-encrypted.pem",
          "--ssl-keyfile-password", "wrong"), "wrong --ssl-keyfile-password"),
        (("--ssl-certfile", "server-cert.pem"), "no PEM private key found; pass it with"),
        (("--ssl-certfile", "server-key.pem"), "--ssl-certfile holds no PEM certificate"),
        (("--ssl-certfile", "server.pem", "--ssl-ciphers", "NOPE"), "selects no cipher"),
    ],
)
def test_bad_tls_files_fail_start_up_in_one_line_with_exit_3(
    pki: PKI, flags: tuple[str, ...], message: str
) -> None:
    result = _start_failure(pki, *flags)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_bad_tls_file_with_workers_fails_before_any_worker_starts(
    pki: PKI, worker_type: str
) -> None:
    result = _start_failure(
        pki, "--workers", "2", "--worker-type", worker_type,
        "--ssl-certfile", "server-cert.pem", "--ssl-keyfile", "foreign-key.pem",
    )
    assert result.returncode == 3
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Worker model" not in result.stderr


def test_pounce_check_uses_the_same_builder(pki: PKI) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    base = [sys.executable, "-m", "pounce", "check", "pounce.examples.hello:app", "--port", "0"]
    bad = subprocess.run(
        [*base, "--ssl-certfile", "server-cert.pem", "--ssl-keyfile", "foreign-key.pem"],
        check=False, capture_output=True, text=True, timeout=60, cwd=pki.dir, env=env,
    )
    assert bad.returncode == 3
    assert "does not belong to the certificate" in bad.stderr
    good = subprocess.run(
        [*base, "--ssl-certfile", "server-cert.pem", "--ssl-keyfile",
         "server-key-encrypted.pem", "--ssl-keyfile-password", "s3cret"],
        check=False, capture_output=True, text=True, timeout=60, cwd=pki.dir, env=env,
    )
    assert good.returncode == 0, good.stderr


def test_expired_server_certificate_is_served_and_refused_by_verifying_clients(
    pki: PKI,
) -> None:
    with serve_in_thread(hello, ssl_certfile=str(pki.expired_server_chain)) as running:
        with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
            tls_request(port_of(running), pki.client_context())
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        assert tls_request(port_of(running), insecure)[0] == 200


def test_tls_options_from_toml_and_environment(pki: PKI, tmp_path: Path) -> None:
    from pounce.config.sources import load_config

    (tmp_path / "pounce.toml").write_text(
        f'ssl_certfile = "{pki.server_cert}"\nssl_keyfile = "{pki.encrypted_key}"\n'
        'ssl_cert_reqs = "optional"\ntimeout_ssl_handshake = "2500ms"\n'
    )
    environ = {
        "POUNCE_SSL_KEYFILE_PASSWORD": "s3cret",
        "POUNCE_SSL_CA_CERTS": str(pki.ca_file),
        "POUNCE_SSL_CIPHERS": "ECDHE+AESGCM",
    }
    loaded = load_config({}, environ=environ, cwd=tmp_path)
    config = loaded.config
    assert config.timeout_ssl_handshake == 2.5
    assert config.ssl_cert_reqs == ssl.CERT_OPTIONAL
    assert loaded.source_of("ssl_keyfile_password").startswith("env")
    context = create_ssl_context(config)
    assert context.verify_mode == ssl.CERT_OPTIONAL
    with serve_in_thread(hello, config=config.replace(host="127.0.0.1", port=0)) as running:
        assert tls_request(port_of(running), pki.client_context())[0] == 200


# --------------------------------------------------------------------------- context settings


def test_context_defaults_are_safe_and_keep_stdlib_ciphers(pki: PKI) -> None:
    config = ServerConfig(ssl_certfile=str(pki.server_chain))
    context = create_ssl_context(config)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    stdlib = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert [c["name"] for c in context.get_ciphers()] == [
        c["name"] for c in stdlib.get_ciphers()
    ]
    restricted = create_ssl_context(config.replace(ssl_ciphers="ECDHE+AESGCM"))
    names = {c["name"] for c in restricted.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and all("AES" in n and "GCM" in n for n in names)


def test_generic_protocol_version_still_requires_tls12(pki: PKI) -> None:
    # PROTOCOL_TLS (2) alone would allow whatever OpenSSL's configuration allows.
    config = ServerConfig(ssl_certfile=str(pki.server_chain), ssl_version=2)
    assert create_ssl_context(config).minimum_version == ssl.TLSVersion.TLSv1_2
    pinned = ServerConfig(ssl_certfile=str(pki.server_chain), ssl_version="PROTOCOL_TLSv1_2")
    assert create_ssl_context(pinned).protocol == ssl.PROTOCOL_TLSv1_2
    with pytest.raises(StartupError, match="is for clients"):
        create_ssl_context(config.replace(ssl_version="PROTOCOL_TLS_CLIENT"))


def test_tls11_client_is_refused(pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    context = pki.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point of the test
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    # Let this client's OpenSSL offer TLS 1.1, so the refusal is the server's.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with caplog.at_level(logging.DEBUG, logger="pounce.error"), serve_in_thread(
        hello, ssl_certfile=str(pki.server_chain), ssl_version=2
    ) as running:
        with pytest.raises(ssl.SSLError):
            tls_request(port_of(running), context)
        assert wait_until(lambda: bool(error_lines(caplog, "TLS handshake with")), 5)
    line = error_lines(caplog, "TLS handshake with")[0].getMessage()
    assert "failed" in line


# --------------------------------------------------------------------------- handshake failures


def test_plain_http_to_tls_port_is_logged_and_closed(
    pki: PKI, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pounce.error"), serve_in_thread(
        hello, ssl_certfile=str(pki.server_chain)
    ) as running:
        with socket.create_connection(("127.0.0.1", port_of(running)), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""
        assert wait_until(lambda: bool(error_lines(caplog, "Plain HTTP request")), 5)
    (record,) = error_lines(caplog, "Plain HTTP request")
    message = record.getMessage()
    assert record.levelno == logging.INFO
    assert message.startswith("Plain HTTP request on a TLS port from 127.0.0.1:")
    assert "use https://" in message
    assert record.exc_info is None


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_failed_and_timed_out_handshakes_log_one_debug_line_even_in_asyncio_debug_mode(
    pki: PKI, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    pytest.importorskip(loop)
    monkeypatch.setenv("PYTHONASYNCIODEBUG", "1")
    with caplog.at_level(logging.DEBUG), serve_in_thread(
        hello, ssl_certfile=str(pki.server_chain), loop=loop, timeout_ssl_handshake=0.3
    ) as running:
        port = port_of(running)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as garbage:
            garbage.sendall(b"\x16\x03\x01\x00\x05hello")  # a broken ClientHello
            stalled = socket.create_connection(("127.0.0.1", port), timeout=5)
            assert wait_until(lambda: len(error_lines(caplog, "TLS handshake with")) >= 2, 5)
            stalled.close()
    lines = error_lines(caplog, "TLS handshake with")
    assert any("timed out after 0.3s" in r.getMessage() for r in lines)
    assert any("failed" in r.getMessage() for r in lines)
    assert all(r.levelno == logging.DEBUG for r in lines)
    tracebacks = [r for r in caplog.records if r.exc_info or r.getMessage().endswith("None")]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert "Traceback" not in caplog.text


# --------------------------------------------------------------------------- stalled handshakes

WORKER_MODES = [
    pytest.param({}, id="single"),
    pytest.param({"workers": 2, "worker_type": "thread", "accept": "distributor"},
                 id="threads-distributor"),
    pytest.param({"workers": 2, "worker_type": "thread", "accept": "reuseport"},
                 id="threads-reuseport"),
    pytest.param({"workers": 2, "worker_type": "process", "accept": "distributor"},
                 id="processes-distributor"),
    pytest.param({"workers": 2, "worker_type": "process", "accept": "reuseport"},
                 id="processes-reuseport"),
]


@pytest.mark.parametrize("mode", WORKER_MODES)
def test_stalled_handshakes_never_hold_up_other_clients(pki: PKI, mode: dict[str, Any]) -> None:
    # More stalled connections than the distributor would queue for every worker: they must
    # not count as hand-offs still waiting, or accepting would stop for the handshake timeout.
    stalled_count = HANDOFF_LIMIT * 2 + 16
    with serve_in_thread(
        hello, ssl_certfile=str(pki.server_chain), log_level="warning",
        startup_timeout=30, **mode,
    ) as running:
        port = port_of(running)
        stalled = []
        try:
            for i in range(stalled_count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if i % 2:
                    sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello
                stalled.append(sock)
            context = pki.client_context()
            started = time.monotonic()
            for _ in range(6):
                status, body, _ = tls_request(port, context, timeout=5)
                assert (status, body) == (200, b"Hello, world!")
            # The handshake timeout is 10 s: a working client beside 500 stalled ones is
            # served in a fraction of that.
            assert time.monotonic() - started < 4.0
        finally:
            for sock in stalled:
                sock.close()


# --------------------------------------------------------------------------- reload


def _served_certificate(sock: ssl.SSLSocket) -> bytes:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_reload_serves_a_renewed_certificate_and_open_connections_keep_theirs(
    pki: PKI, tmp_path: Path, worker_type: str
) -> None:
    live = tmp_path / "live.pem"
    shutil.copy(pki.server_chain, live)
    first = ssl.PEM_cert_to_DER_cert(pki.server_cert_pem)
    with serve_in_thread(
        hello, ssl_certfile=str(live), workers=2, worker_type=worker_type, startup_timeout=30
    ) as running:
        port = port_of(running)
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        open_conn = pki.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
        open_conn.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        assert read_response(open_conn)[0] == 200
        assert _served_certificate(open_conn) == first

        shutil.copy(pki.other_server_chain, live)  # the renewed certificate
        running.server.reload()

        def renewed() -> bool:
            _, _, session = tls_request(port, pki.client_context())
            return session.server_cert != first

        assert wait_until(renewed, 10)
        # The connection opened before the reload still talks over its original session.
        open_conn.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        assert read_response(open_conn)[0] == 200
        assert _served_certificate(open_conn) == first
        open_conn.close()


def test_reload_with_a_broken_certificate_keeps_the_old_generation(
    pki: PKI, tmp_path: Path
) -> None:
    live = tmp_path / "live.pem"
    shutil.copy(pki.server_chain, live)
    with serve_in_thread(hello, ssl_certfile=str(live), log_level="critical") as running:
        live.write_text("garbage\n")
        running.server.reload()
        supervisor = running.server._supervisor
        assert supervisor is not None
        assert wait_until(lambda: supervisor.failed_reloads == 1, 10)
        assert tls_request(port_of(running), pki.client_context())[0] == 200


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_handshake_in_progress_survives_the_retirement_of_its_worker(
    pki: PKI, worker_type: str
) -> None:
    with serve_in_thread(
        hello, ssl_certfile=str(pki.server_chain), workers=2, worker_type=worker_type,
        startup_timeout=30,
    ) as running:
        port = port_of(running)
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)  # handshake pending
        supervisor = running.server._supervisor
        assert supervisor is not None
        assert wait_until(lambda: supervisor.stats()["workers"] != [], 5)
        running.server.reload()
        assert wait_until(lambda: supervisor.reloads == 1, 20)
        with pki.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            assert read_response(sock) == (200, b"Hello, world!")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_shutdown_does_not_wait_for_stalled_handshakes(
    pki: PKI, caplog: pytest.LogCaptureFixture, loop: str
) -> None:
    pytest.importorskip(loop)
    with caplog.at_level(logging.DEBUG, logger="pounce.error"), serve_in_thread(
        hello, ssl_certfile=str(pki.server_chain), timeout_ssl_handshake=30, loop=loop
    ) as running:
        stalled = socket.create_connection(("127.0.0.1", port_of(running)), timeout=5)
        assert tls_request(port_of(running), pki.client_context())[0] == 200
        started = time.monotonic()
        running.server.shutdown()
        running.thread.join(10)
        assert not running.thread.is_alive()
    assert time.monotonic() - started < 5  # not the 30 s handshake timeout
    assert stalled.recv(10) == b""  # closed by the server
    stalled.close()
    assert error_lines(caplog, "aborted: the worker is stopping")
