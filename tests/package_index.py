"""A package index on loopback for pypi: sources: PEP 691 JSON and PEP 503 HTML project pages
over archives the tests build (sdists and wheels), served by a real HTTP server."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def sdist(name: str, version: str, files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A .tar.gz with ``files`` under ``<name>-<version>/`` (and symlinks ``links``: name -> target)."""
    buf = io.BytesIO()
    top = f"{name.replace('-', '_')}-{version}"
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, data in {"PKG-INFO": b"Metadata-Version: 2.1\n", **files}.items():
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for path, target in (links or {}).items():
            info = tarfile.TarInfo(f"{top}/{path}")
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def wheel(name: str, version: str, files: dict[str, bytes]) -> bytes:
    """A wheel (zip) with ``files`` at its root and a dist-info folder."""
    buf = io.BytesIO()
    info = f"{name.replace('-', '_')}-{version}.dist-info"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in {**files, f"{info}/METADATA": b"Metadata-Version: 2.1\n"}.items():
            z.writestr(path, data)
    return buf.getvalue()


@dataclass
class Index:
    """Projects the index serves: name -> {filename: bytes}; what it was asked."""

    base: str = ""
    projects: dict[str, dict[str, bytes]] = field(default_factory=dict)
    hashes: dict[str, str | None] = field(default_factory=dict)  # filename -> sha256 to claim
    hits: Counter = field(default_factory=Counter)
    accept: list[str | None] = field(default_factory=list)

    @property
    def json_url(self) -> str:  # PEP 691 pages (JSON)
        return f"{self.base}/json"

    @property
    def html_url(self) -> str:  # PEP 503 pages (HTML, hashes in the link fragments)
        return f"{self.base}/html"

    def add(self, project: str, filename: str, data: bytes) -> None:
        self.projects.setdefault(project, {})[filename] = data

    def _sha256(self, filename: str, data: bytes) -> str | None:
        return self.hashes.get(filename, hashlib.sha256(data).hexdigest())

    def page(self, kind: str, project: str) -> tuple[str, bytes] | None:
        files = self.projects.get(project)
        if files is None:
            return None
        if kind == "json":
            entries = [{"filename": f, "url": f"../../files/{f}", "yanked": False,
                        "hashes": {"sha256": h} if (h := self._sha256(f, d)) else {}}
                       for f, d in files.items()]
            body = {"meta": {"api-version": "1.1"}, "name": project, "files": entries}
            return "application/vnd.pypi.simple.v1+json", json.dumps(body).encode()
        links = "".join(f'<a href="{self.base}/files/{f}{"#sha256=" + h if (h := self._sha256(f, d)) else ""}">'
                        f"{f}</a><br/>\n" for f, d in files.items())
        return "text/html", f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode()


@contextlib.contextmanager
def serving() -> Iterator[Index]:
    index = Index()

    class Handler(BaseHTTPRequestHandler):
        """/json/<project>/, /html/<project>/ (404 for an unknown project), /files/<filename>."""

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: bytes, kind: str = "application/octet-stream") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            index.hits[path] += 1
            parts = path.strip("/").split("/")
            if len(parts) == 2 and parts[0] in ("json", "html"):
                index.accept.append(self.headers.get("Accept"))
                if (page := index.page(parts[0], parts[1])) is not None:
                    self._send(200, page[1], page[0])
                    return
            if len(parts) == 2 and parts[0] == "files":
                for files in index.projects.values():
                    if parts[1] in files:
                        self._send(200, files[parts[1]])
                        return
            self._send(404, b"not found", "text/plain")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    index.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
