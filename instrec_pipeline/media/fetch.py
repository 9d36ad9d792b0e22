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
connection errors, truncated bodies, 429 and 5xx), or ``yt:<id>`` / ``youtube:<id>`` through the yt-dlp API
(≤ 480p + best audio, YouTube's JS challenges solved by the bundled deno, rate limits backed off, failures
sorted into categories that :func:`failure_category` reads back).
Every other scheme (``file:``, ``ftp:``, ``s3:`` …) is refused, as are redirects to one.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.client
import json
import mimetypes
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from instrec_pipeline.media.errors import MediaError

__all__ = ["YT_FORMAT", "MediaError", "failure_category", "fetch", "source_key"]

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


#: Format for yt-dlp: the models look at 224×224 frames and 16 kHz mono audio, so anything above 480p is
#: bandwidth and disk spent on pixels that the resize throws away, while the audio must be the best there
#: is (the audio model is the stronger one). ``bv*+ba`` is merged by ffmpeg into one container; ``b`` is
#: the fallback for sites or videos that only offer progressive (audio+video) files.
YT_FORMAT = "bv*[height<=480]+ba/b[height<=480]/b"

#: Least first wait (seconds) between yt-dlp attempts: YouTube's rate limits last minutes, so the half
#: second that suits a flaky HTTP server would burn every retry inside one ban.
YT_MIN_BACKOFF = 5.0

#: Categories of yt-dlp failures worth another attempt after a wait; the rest (private, removed, geo-blocked
#: …) fail the same way every time.
_YT_TRANSIENT = frozenset({"rate-limited", "network"})

#: yt-dlp's (mostly YouTube's) wording -> category, first match wins: YouTube prefixes many permanent
#: reasons with "Video unavailable", and "Sign in" is part of the private, age and bot messages, so the
#: specific patterns come before the generic ones.
_YT_CATEGORIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (category, re.compile(pattern, re.IGNORECASE))
    for category, pattern in (
        ("rate-limited", r"HTTP Error 429|too many requests|rate[- ]?limit|not a bot|captcha"
                         r"|try again later"),
        ("private", r"\bprivate video\b|\bvideo is private\b"),
        ("age-restricted", r"confirm your age|age[- ]restrict|inappropriate for some users"),
        ("copyright", r"copyright"),
        ("geo-blocked", r"in your country|geo[- ]?(restrict|block)"
                        r"|not available (in|from) your (region|location)"),
        ("login-required", r"sign in|\blog ?in\b|members[- ]only|join this channel|requires payment|premium"),
        ("unavailable", r"video (is )?(unavailable|not available)|removed|deleted|terminated|does not exist"
                        r"|no longer available|HTTP Error (404|410)\b"),
        ("network", r"HTTP Error 5\d\d|timed? ?out|connection|unreachable|name resolution|resolve|"
                    r"name or service not known|network|SSL|remote end closed|unable to connect"),
    )
)  # fmt: skip

_FAILURE_CATEGORY = (
    (re.compile(r"yt-dlp failed \[([a-z-]+)\]"), None),  # None: the bracketed category itself
    (re.compile(r"\bHTTP (\d{3})\b"), "http-{}"),
    (re.compile(r"file not found|not a regular file"), "missing"),
    (re.compile(r"truncated|giving up after"), "network"),
)


def failure_category(reason: str) -> str:
    """A short category for a fetch failure ``reason`` (``MediaError.reason``), to count failures by.

    yt-dlp reasons carry their category (``private``, ``unavailable``, ``geo-blocked``, ``age-restricted``,
    ``rate-limited``, ``copyright``, ``login-required``, ``network``, ``other``); HTTP status errors become
    ``http-<code>``; a local file that is not there ``missing``; connection trouble ``network``.
    """
    for pattern, template in _FAILURE_CATEGORY:
        if match := pattern.search(reason):
            return match.group(1) if template is None else template.format(*match.groups())
    return "other"


def _yt_category(message: str) -> str | None:
    return next((category for category, pattern in _YT_CATEGORIES if pattern.search(message)), None)


class _YtLogger:
    """Collects yt-dlp's messages instead of letting it print: its last error is the failure's reason and
    its last warnings (a JS challenge that could not be solved, a format that went missing) often say why."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: collections.deque[str] = collections.deque(maxlen=3)

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        self.warnings.append(_clean_yt_message(msg))

    def error(self, msg: str) -> None:
        self.errors.append(_clean_yt_message(msg))

    def failure(self, exc: BaseException, source: str | None = None) -> MediaError | _Retryable:
        """The exception that ``exc`` (raised by yt-dlp) becomes: categorised, worth a retry or not."""
        error = self.errors[-1] if self.errors else _clean_yt_message(str(exc))
        warnings = " | ".join(self.warnings)
        category = _yt_category(error) or _yt_category(warnings) or "other"
        reason = f"yt-dlp failed [{category}]: {error}" + (f" (warnings: {warnings})" if warnings else "")
        return _Retryable(reason) if category in _YT_TRANSIENT else MediaError(reason, source)


_BUG_REPORT = re.compile(r";? ?please report this issue on .*$", re.IGNORECASE | re.DOTALL)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _clean_yt_message(msg: str, limit: int = 300) -> str:
    """One line of yt-dlp's text without its level prefix, colours and bug-report boilerplate."""
    msg = _BUG_REPORT.sub("", _ANSI.sub("", msg)).strip()
    msg = re.sub(r"^(ERROR|WARNING):\s*", "", msg)
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def _deno_path() -> str | None:
    """The deno binary of the ``deno`` PyPI package (a project dependency), so YouTube's JS challenges are
    solved without a system-wide install; None lets yt-dlp look for one on PATH."""
    try:
        import deno

        return os.fsdecode(deno.find_deno_bin())
    except (ImportError, FileNotFoundError):
        return None


def _ydl_options(
    workdir: Path, logger: _YtLogger, *, timeout: float, retries: int, cookiefile: Path | None = None
) -> dict[str, Any]:
    """yt-dlp's options for one download into ``workdir`` (pure, so tests can read them)."""
    deno = _deno_path()
    options: dict[str, Any] = {
        "quiet": True,
        "noprogress": True,
        "logger": logger,
        "noplaylist": True,
        "cachedir": False,  # write nowhere but the private work dir
        "socket_timeout": timeout,
        "retries": retries,  # yt-dlp's own, within one download (resumes a dropped connection)
        "fragment_retries": retries,
        "extractor_retries": 0,  # rate limits and outages are retried by _yt_download, with back-off
        "format": YT_FORMAT,
        "merge_output_format": "mp4/mkv",  # mp4 where the codecs allow it, else mkv (takes any codec)
        # Since late 2025 YouTube serves formats only to clients that solve its JS challenges (yt-dlp
        # #15012): deno runs the solver scripts of the yt-dlp-ejs package, both installed with the project;
        # no solver code is fetched from the network at run time.
        "js_runtimes": {"deno": {"path": deno} if deno else {}},
        "remote_components": [],
        "outtmpl": str(workdir / "%(id)s.%(ext)s"),
        "paths": {"home": str(workdir), "temp": str(workdir)},
    }
    if cookiefile is not None:
        options["cookiefile"] = str(cookiefile)
    return options


def _yt_download(
    url: str,
    source: str,
    store: _Store,
    *,
    retries: int,
    timeout: float,
    backoff: float,
    cookies: Path | None = None,
) -> tuple[Path, str, int]:
    """Download ``url`` with yt-dlp and publish it in the store; returns (object path, digest, size).

    Rate limits and network failures are retried ``retries`` times after ``backoff · 2^k`` seconds (each
    attempt resumes the partial files of the last); private, removed, geo-blocked … videos fail at once.
    """
    import yt_dlp  # slow import, only when needed

    store.tmp.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.tmp, prefix="yt-") as tmpdir:
        workdir = Path(tmpdir)
        cookiefile = None
        if cookies is not None:  # yt-dlp writes the jar back on exit: give it a private copy, so the
            cookiefile = workdir / "cookies.txt"  # user's file is never rewritten by concurrent fetches
            try:
                shutil.copyfile(cookies, cookiefile)
            except OSError as exc:
                raise MediaError(f"cannot read cookies file: {exc}", source) from exc

        def attempt() -> dict[str, Any]:
            logger = _YtLogger()
            options = _ydl_options(workdir, logger, timeout=timeout, retries=retries, cookiefile=cookiefile)
            try:
                with yt_dlp.YoutubeDL(options) as ydl:
                    return ydl.extract_info(url, download=True) or {}
            except Exception as exc:  # yt-dlp raises DownloadError and assorted internals
                raise logger.failure(exc, source) from exc

        info = _with_retries(attempt, source, retries, backoff)
        partial = (".part", ".ytdl", ".txt")
        files = [p for p in workdir.iterdir() if p.is_file() and not p.name.endswith(partial)]
        if not files:
            raise MediaError("yt-dlp reported success but wrote no file", source)
        produced = max(files, key=lambda p: p.stat().st_size)
        ext = _safe_ext(info.get("ext") or produced.suffix)
        with store.temp_file() as (fh, tmp), open(produced, "rb") as src:
            digest, size = _copy_hashing(src, fh)
            dest = store.commit(tmp, digest, ext)
    return dest, digest, size


def _fetch_youtube(
    vid: str, key: str, source: str, store: _Store, retries: int, timeout: float, backoff: float,
    cookies: Path | None,
) -> Path:  # fmt: skip
    entry = store.lookup(key)
    if entry:
        return store.object_path(entry["digest"], entry["ext"])
    dest, digest, size = _yt_download(
        f"https://www.youtube.com/watch?v={vid}", source, store, retries=retries, timeout=timeout,
        backoff=max(backoff, YT_MIN_BACKOFF), cookies=cookies,
    )  # fmt: skip
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
    cookies: Path | str | None = None,
) -> Path:
    """Make ``source`` available in the raw store and return ``raw_root/<sha[:2]>/<sha>.<ext>``.

    Idempotent: a source already in the index is not fetched again (a local file only if its size or
    mtime changed). Writes are atomic, so an interrupted download never leaves a file that looks complete.
    ``retries`` is the number of extra attempts for transient network failures, ``backoff`` the first wait
    in seconds (doubling each time; at least :data:`YT_MIN_BACKOFF` for YouTube). ``cookies`` is a
    Netscape cookies file for YouTube (age-restricted videos, "not a bot" checks), only read.
    Raises :class:`MediaError` for anything that cannot be fetched (:func:`failure_category` sorts them).
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
        cookie_path = Path(cookies).expanduser() if cookies is not None else None
        return _fetch_youtube(value, key, source, store, retries, timeout, backoff, cookie_path)
    except MediaError as exc:
        if exc.video_id is None:
            exc.video_id = source
        raise
    except OSError as exc:  # the store itself (disk full, permissions) rather than the source
        raise MediaError(f"raw store error: {exc}", source) from exc
