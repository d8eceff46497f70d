"""Fixtures for the fetch tests: real HTTP(S) servers on loopback and cache inspection helpers."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

PAYLOAD = b"teacher-checkpoint-" + bytes(range(256)) * 64  # ~16 KiB, several progress updates
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class FileServer:
    """What the handler serves and what it saw."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)  # path (no query) -> requests
    auth: list[str | None] = field(default_factory=list)  # Authorization headers seen
    connections: int = 0  # TCP connections accepted (a rejected TLS handshake sends no request)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """Routes:
        /files/<name>            the bytes in state.files, or 404
        /forbidden               403
        /private/<name>          401
        /truncated               Content-Length 1000 more than sent, then the connection closes
        /flaky/<code>/<n>/<name> <code> for the first <n> requests, then the file
        """

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def _send(self, code: int, body: bytes = b"", length: int | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            state.hits[path] += 1
            state.auth.append(self.headers.get("Authorization"))
            parts = path.strip("/").split("/")
            if parts[0] == "files" and len(parts) == 2 and parts[1] in state.files:
                self._send(200, state.files[parts[1]])
            elif path == "/forbidden":
                self._send(403, b"no")
            elif parts[0] == "private":
                self._send(401, b"who are you?")
            elif path == "/truncated":
                self._send(200, PAYLOAD[:500], length=len(PAYLOAD[:500]) + 1000)
                self.close_connection = True
            elif parts[0] == "flaky" and len(parts) == 4:
                code, n, name = int(parts[1]), int(parts[2]), parts[3]
                if state.hits[path] <= n:
                    self._send(code, b"try again")
                else:
                    self._send(200, state.files[name])
            else:
                self._send(404, b"not found")

    return Handler


@contextlib.contextmanager
def _serving(tls: ssl.SSLContext | None = None) -> Iterator[FileServer]:
    state = FileServer(files={"teacher.pt": PAYLOAD, "other.pt": b"another checkpoint"})

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, object]:
            sock, addr = super().get_request()
            state.connections += 1
            if tls is None:
                return sock, addr
            try:  # the handshake; when it fails, the server drops the connection (OSError)
                return tls.wrap_socket(sock, server_side=True), addr
            except OSError:
                sock.close()
                raise

    server = Server(("127.0.0.1", 0), _handler(state))
    state.base = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def http_server() -> Iterator[FileServer]:
    with _serving() as state:
        yield state


@pytest.fixture(scope="session")
def self_signed_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(certificate, key) PEM files: a self-signed certificate for 127.0.0.1, as a server
    with a private CA has (untrusted unless a CA bundle holding it is given)."""
    pytest.importorskip("cryptography", reason="the cryptography package makes the test certificate")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())  # EC: generated in milliseconds
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fetch-test private CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        # Its own CA, so it can be the trust anchor of a bundle (strict X.509 checks want these).
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def https_server(self_signed_cert: tuple[Path, Path]) -> Iterator[FileServer]:
    """The routes of ``http_server`` over TLS, with the self-signed certificate."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*self_signed_cert)
    with _serving(tls) as state:
        yield state


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cache_files(cache_dir: Path) -> Callable[[], list[str]]:
    """Every regular file under the cache (blobs, index entries, temp files), relative."""
    def files() -> list[str]:
        if not cache_dir.exists():
            return []
        return sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*") if p.is_file())
    return files
