"""Fixtures for the fetch tests: a real HTTP server on loopback and cache inspection helpers."""

from __future__ import annotations

import hashlib
import socket
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


@pytest.fixture
def http_server() -> Iterator[FileServer]:
    state = FileServer(files={"teacher.pt": PAYLOAD, "other.pt": b"another checkpoint"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
