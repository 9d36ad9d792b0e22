"""Fetch a video source into a content-addressed raw store.

Store layout under ``raw_root``::

    <sha256[:2]>/<sha256>.<ext>        the bytes, named by their digest (immutable once written)
    index/<sha256(key)>.json           source key -> digest, size (and mtime for local files)
    .tmp/                              in-flight downloads (same filesystem, so os.replace is atomic)

Why content addressing: the same video reached through two datasets or two URLs is stored once, and a
stored file's name proves its content, so downstream caches can key on it. Why the index: a re-run must
neither re-download a URL nor re-hash a multi-GB local file that has not changed (same size and mtime).

Sources: a local path (relative to ``media_root``, else to the working directory; write ``./a:b.mp4`` for a
local name containing a colon), an ``http(s)://`` URL (streamed, retried with exponential backoff on
connection errors, truncated bodies, 429 and 5xx), or ``yt:<id>`` / ``youtube:<id>`` through the yt-dlp API.
Every other scheme (``file:``, ``ftp:``, ``s3:`` …) is refused, as are redirects to one.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import mimetypes
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from instrec_pipeline.media.errors import MediaError

__all__ = ["MediaError", "fetch", "source_key"]

_CHUNK = 1 << 20
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_YT_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_EXT = re.compile(r"^[a-z0-9]{1,8}$")
_USER_AGENT = "instrec_pipeline/0.1"


class _Retryable(Exception):
    """A transient failure (connection, timeout, truncated body, 5xx/429) worth another attempt."""


def source_key(source: str, media_root: Path | None = None) -> str:
    """The canonical form of ``source`` that the index is keyed on.

    Local paths become ``local:<absolute path>`` so ``a.mp4`` under a media root and its absolute spelling
    share one entry; ``youtube:<id>`` becomes ``yt:<id>``; URLs are kept verbatim.
    """
    kind, value = _classify(source, media_root)
    return f"{kind}:{value}"


def _classify(source: str, media_root: Path | None) -> tuple[str, str]:
    source = source.strip()
    if not source:
        raise MediaError("empty source", source)
    lowered = source.lower()
    if lowered.startswith(("http://", "https://")):
        return "url", source
    match = _SCHEME.match(source)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("yt", "youtube"):
            vid = source[match.end() :].strip()
            if not _YT_ID.match(vid):
                raise MediaError(f"not a YouTube video id: {vid!r}", source)
            return "yt", vid
        raise MediaError(f"unsupported source scheme {scheme!r} (local path, http(s):// or yt:<id>)", source)
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = (Path(media_root) if media_root is not None else Path.cwd()) / path
    return "local", os.path.abspath(path)


def _safe_ext(ext: str | None) -> str:
    ext = (ext or "").lower().lstrip(".")
    return ext if _EXT.match(ext) else "bin"


class _Store:
    def __init__(self, raw_root: Path) -> None:
        self.root = Path(raw_root)
        self.tmp = self.root / ".tmp"
        self.index = self.root / "index"

    def object_path(self, digest: str, ext: str) -> Path:
        return self.root / digest[:2] / f"{digest}.{ext}"

    def index_path(self, key: str) -> Path:
        return self.index / f"{hashlib.sha256(key.encode('utf-8', 'surrogateescape')).hexdigest()}.json"

    def lookup(self, key: str) -> dict[str, Any] | None:
        try:
            entry = json.loads(self.index_path(key).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        try:
            obj = self.object_path(entry["digest"], entry["ext"])
            if obj.stat().st_size != entry["size"]:  # store damaged by hand: fetch again
                return None
        except (KeyError, TypeError, OSError):
            return None
        return entry

    @contextlib.contextmanager
    def temp_file(self) -> Iterator[tuple[IO[bytes], Path]]:
        """A temp file on the store's filesystem, removed unless the caller moved it into place."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="part-")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh, path
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def commit(self, tmp: Path, digest: str, ext: str) -> Path:
        """Atomically publish ``tmp`` as the object for ``digest``: readers see all of it or nothing."""
        dest = self.object_path(digest, ext)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and dest.stat().st_size == tmp.stat().st_size:
            return dest  # same bytes already stored (another source, or a concurrent fetch)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        return dest

    def record(self, key: str, source: str, dest: Path, digest: str, size: int, mtime_ns: int | None) -> None:
        entry = {
            "key": key,
            "source": source,
            "digest": digest,
            "ext": dest.suffix.lstrip("."),
            "size": size,
            "mtime_ns": mtime_ns,
            "path": dest.relative_to(self.root).as_posix(),
            "fetched_at": time.time(),
        }
        self.index.mkdir(parents=True, exist_ok=True)
        target = self.index_path(key)
        fd, name = tempfile.mkstemp(dir=self.index, prefix=".part-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry, fh, indent=1)
            os.replace(name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise


def _copy_hashing(src: IO[bytes], dst: IO[bytes], expected: int | None = None) -> tuple[str, int]:
    """Stream ``src`` into ``dst`` in chunks, hashing on the way (one read of the data)."""
    h, size = hashlib.sha256(), 0
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    if expected is not None and size != expected:
        raise _Retryable(f"body truncated: {size} of {expected} bytes")
    dst.flush()
    os.fsync(dst.fileno())  # durable before it becomes visible under its final name
    return h.hexdigest(), size


def _fetch_local(path: str, key: str, source: str, store: _Store) -> Path:
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise MediaError("file not found", source) from None
    except OSError as exc:
        raise MediaError(f"cannot stat: {exc}", source) from exc
    if not os.path.isfile(path):
        raise MediaError("not a regular file", source)
    entry = store.lookup(key)
    if entry and entry.get("size") == before.st_size and entry.get("mtime_ns") == before.st_mtime_ns:
        return store.object_path(entry["digest"], entry["ext"])
    with store.temp_file() as (fh, tmp):
        try:
            with open(path, "rb") as src:
                digest, size = _copy_hashing(src, fh)
        except OSError as exc:
            raise MediaError(f"cannot read: {exc}", source) from exc
        after = os.stat(path)
        changed = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
        if changed or size != after.st_size:
            raise MediaError("file changed while being copied; try again", source)
        dest = store.commit(tmp, digest, _safe_ext(Path(path).suffix))
    store.record(key, source, dest, digest, size, before.st_mtime_ns)
    return dest


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect to ftp:; the store only trusts http(s)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise MediaError(f"refusing redirect to {newurl!r}", req.full_url)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _url_ext(url: str, content_type: str | None) -> str:
    suffix = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).suffix
    if _EXT.match(suffix.lower().lstrip(".")):
        return suffix.lower().lstrip(".")
    if content_type:
        guessed = mimetypes.guess_extension(content_type.split(";")[0].strip())
        return _safe_ext(guessed)
    return "bin"


def _download_once(url: str, store: _Store, timeout: float) -> tuple[Path, str, str, int]:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with _OPENER.open(request, timeout=timeout) as resp, store.temp_file() as (fh, tmp):
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            digest, size = _copy_hashing(resp, fh, expected)
            ext = _url_ext(resp.geturl(), resp.headers.get("Content-Type"))
            return store.commit(tmp, digest, ext), digest, ext, size
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise MediaError(f"HTTP {exc.code} {exc.reason}", url) from exc
    except (TimeoutError, urllib.error.URLError, http.client.HTTPException, ConnectionError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from exc


def _with_retries(fn: Callable[[], Any], source: str, retries: int, backoff: float) -> Any:
    """Call ``fn`` up to ``retries + 1`` times, sleeping ``backoff · 2^k`` between attempts."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except _Retryable as exc:
            if attempt == retries:
                raise MediaError(f"giving up after {attempt + 1} attempts: {exc}", source) from exc
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


def _fetch_url(url: str, key: str, store: _Store, retries: int, timeout: float, backoff: float) -> Path:
    entry = store.lookup(key)
    if entry:
        return store.object_path(entry["digest"], entry["ext"])
    dest, digest, _, size = _with_retries(lambda: _download_once(url, store, timeout), url, retries, backoff)
    store.record(key, url, dest, digest, size, None)
    return dest


class _YtLogger:
    """Collects yt-dlp's messages instead of letting it print; the last error becomes the MediaError."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass

    def error(self, msg: str) -> None:
        self.errors.append(msg)


def _fetch_youtube(vid: str, key: str, source: str, store: _Store, retries: int, timeout: float) -> Path:
    entry = store.lookup(key)
    if entry:
        return store.object_path(entry["digest"], entry["ext"])
    import yt_dlp  # slow import, only when needed

    store.tmp.mkdir(parents=True, exist_ok=True)
    logger = _YtLogger()
    with tempfile.TemporaryDirectory(dir=store.tmp, prefix="yt-") as workdir:
        options = {
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "logger": logger,
            "noplaylist": True,
            "cachedir": False,  # write nowhere but the private work dir
            "socket_timeout": timeout,
            "retries": retries,
            "fragment_retries": retries,
            "extractor_retries": 0,  # no network / removed video: fail in about a second, not minutes
            "format": "bestvideo[height<=720]+bestaudio/best[height<=720]/best",
            "outtmpl": str(Path(workdir) / "%(id)s.%(ext)s"),
            "paths": {"home": workdir, "temp": workdir},
        }
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                info = ydl.extract_info(f"https://www.youtube.com/watch?v={vid}", download=True)
        except Exception as exc:  # yt-dlp raises DownloadError and assorted internals
            reason = logger.errors[-1] if logger.errors else str(exc)
            raise MediaError(f"yt-dlp failed: {reason.removeprefix('ERROR: ')}", source) from exc
        partial = (".part", ".ytdl")
        files = [p for p in Path(workdir).iterdir() if p.is_file() and not p.name.endswith(partial)]
        if not files:
            raise MediaError("yt-dlp reported success but wrote no file", source)
        produced = max(files, key=lambda p: p.stat().st_size)
        ext = _safe_ext((info or {}).get("ext") or produced.suffix)
        with store.temp_file() as (fh, tmp):
            with open(produced, "rb") as src:
                digest, size = _copy_hashing(src, fh)
            dest = store.commit(tmp, digest, ext)
    store.record(key, source, dest, digest, size, None)
    return dest


def fetch(
    source: str,
    raw_root: Path,
    *,
    media_root: Path | None = None,
    retries: int = 3,
    timeout: float = 60,
    backoff: float = 0.5,
) -> Path:
    """Make ``source`` available in the raw store and return ``raw_root/<sha[:2]>/<sha>.<ext>``.

    Idempotent: a source already in the index is not fetched again (a local file only if its size or
    mtime changed). Writes are atomic, so an interrupted download never leaves a file that looks complete.
    ``retries`` is the number of extra attempts for transient network failures, ``backoff`` the first wait
    in seconds (doubling each time). Raises :class:`MediaError` for anything that cannot be fetched.
    """
    if retries < 0:
        raise ValueError("retries must be >= 0")
    kind, value = _classify(source, media_root)
    key = f"{kind}:{value}"
    store = _Store(raw_root)
    try:
        if kind == "local":
            return _fetch_local(value, key, source, store)
        if kind == "url":
            return _fetch_url(value, key, store, retries, timeout, backoff)
        return _fetch_youtube(value, key, source, store, retries, timeout)
    except MediaError as exc:
        if exc.video_id is None:
            exc.video_id = source
        raise
    except OSError as exc:  # the store itself (disk full, permissions) rather than the source
        raise MediaError(f"raw store error: {exc}", source) from exc
