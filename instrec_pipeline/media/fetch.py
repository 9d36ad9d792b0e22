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

A manifest is data, often written elsewhere, so a :class:`FetchPolicy` bounds what its rows can reach: local
paths stay inside the media root, http(s) connects to no internal address (server-side request forgery), and
a download stops at ``max_bytes`` and at ``deadline_s``. Each is relaxed per dataset, explicitly.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import http.client
import ipaddress
import json
import math
import mimetypes
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from instrec_pipeline.media.errors import MediaError

__all__ = ["YT_FORMAT", "FetchPolicy", "MediaError", "failure_category", "fetch", "source_key"]

_CHUNK = 1 << 20
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_YT_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_EXT = re.compile(r"^[a-z0-9]{1,8}$")
_USER_AGENT = "instrec_pipeline/0.1"


class _Retryable(Exception):
    """A transient failure (connection, timeout, truncated body, 5xx/429) worth another attempt."""


@dataclass(frozen=True)
class FetchPolicy:
    """What one dataset's sources may reach and take; the defaults suit a manifest nobody vetted.

    ``allow_absolute_paths``: local sources may be absolute or resolve (symlinks followed) outside the media
    root; otherwise a row naming ``../../etc/passwd`` could copy any file the pipeline reads into the store.
    ``allow_hosts``: host names http(s) may reach whatever they resolve to (an intranet mirror);
    ``allow_networks``: CIDRs (``"10.0.0.0/8"``) whose addresses it may reach. Otherwise loopback, private,
    link-local (cloud metadata), multicast, reserved and other non-global addresses are refused.
    ``max_bytes``: the most one download may take (Content-Length, the body as read, yt-dlp's files).
    ``deadline_s``: wall time for one download, all attempts, back-off and slow bodies included.
    Byte and time limits bound downloads only: local files are the dataset's own.
    """

    allow_absolute_paths: bool = False
    allow_hosts: tuple[str, ...] = ()
    allow_networks: tuple[str, ...] = ()
    max_bytes: int = 4 * 1024**3
    deadline_s: float = 1800.0

    def __post_init__(self) -> None:
        for name in ("allow_hosts", "allow_networks"):  # lists (from YAML) are fine; one bare string is not
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a sequence of strings, not {value!r}")
            object.__setattr__(self, name, tuple(v.strip() for v in value))
        object.__setattr__(self, "allow_hosts", tuple(h.lower().rstrip(".") for h in self.allow_hosts))
        _networks(self.allow_networks)  # raises on a bad CIDR now, not at the first download
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) or self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive whole number of bytes, not {self.max_bytes!r}")
        deadline = self.deadline_s
        if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not 0 < deadline < math.inf:
            raise ValueError(f"deadline_s must be a positive, finite number of seconds, not {deadline!r}")


@functools.lru_cache(maxsize=64)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr))
        except ValueError as exc:
            raise ValueError(f"allow_networks: {cidr!r} is not a network like '10.0.0.0/8' ({exc})") from None
    return tuple(networks)


#: Address properties that make an address internal, in the order the reason names them.
_INTERNAL = ("unspecified", "loopback", "link_local", "multicast", "private", "reserved")


def _address_refusal(host: str, address: str, policy: FetchPolicy) -> str | None:
    """Why ``policy`` forbids connecting to ``address`` (resolved from ``host``), None if it does not.

    Internal addresses are refused so that a manifest row cannot make the pipeline query the internal network
    (cloud metadata at 169.254.169.254 / fd00:ec2::254, admin ports on localhost) and store the answer.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the scope is not part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    if any(ip in network for network in _networks(policy.allow_networks)):
        return None
    kind = next((k.replace("_", "-") for k in _INTERNAL if getattr(ip, f"is_{k}")), None)
    if kind is None and ip.is_global:
        return None
    return (
        f"refusing to connect to {host!r}: {ip} is a {kind or 'non-global'} address (internal addresses are "
        f"refused against server-side request forgery); to fetch from it, add {host!r} to allow_hosts or a "
        f"network containing {ip} to allow_networks"
    )


class _Budget:
    """One download's share of a :class:`FetchPolicy`: its bytes, its time, and the connections it opened.

    A socket timeout bounds one read only: a server that trickles a byte before each timeout would hold the
    download (headers included) for ever, so a watchdog cuts every connection when the time is up.
    """

    def __init__(self, policy: FetchPolicy, source: str) -> None:
        self.policy, self.source = policy, source
        self.end = time.monotonic() + policy.deadline_s
        self.socks: list[socket.socket] = []
        self.expired = False

    def left(self, last: object = None) -> float:
        """Seconds left; past the deadline, the error saying so (``last``: the failure the deadline ended)."""
        left = self.end - time.monotonic()
        if left <= 0 or self.expired:
            why = f" (last error: {last})" if last else ""
            deadline = self.policy.deadline_s
            raise MediaError(f"no complete download within deadline_s={deadline:g} s{why}", self.source)
        return left

    def take(self, size: int, announced: bool = False) -> None:
        """Refuse a body of ``size`` bytes (announced: by its Content-Length) over ``max_bytes``."""
        if size > self.policy.max_bytes:
            what = "Content-Length" if announced else "at least"
            raise MediaError(
                f"larger than max_bytes={self.policy.max_bytes} ({what} {size} bytes); raise max_bytes for "
                "this dataset to allow it",
                self.source,
            )

    def progress(self, status: dict[str, Any]) -> None:
        """yt-dlp's progress hook: stops its download over ``max_bytes`` or past the deadline."""
        self.take(int(status.get("downloaded_bytes") or 0))
        self.left()

    @contextlib.contextmanager
    def watchdog(self) -> Iterator[None]:
        timer = threading.Timer(self.end - time.monotonic(), self._cut)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _cut(self) -> None:
        self.expired = True
        for sock in self.socks:  # a reader blocked in recv() sees end of stream
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def source_key(source: str, media_root: Path | None = None) -> str:
    """The canonical form of ``source`` that the index is keyed on.

    Local paths become ``local:<absolute path>`` so ``a.mp4`` under a media root and its absolute spelling
    share one entry (``~`` is a name like any other: a manifest must not reach into a home directory);
    ``youtube:<id>`` becomes ``yt:<id>``; URLs are kept verbatim.
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
    path = Path(source)
    if not path.is_absolute():
        path = (Path(media_root) if media_root is not None else Path.cwd()) / path
    return "local", os.path.abspath(path)


def source_stamp(source: str, media_root: Path | None) -> str:
    """What says a source changed without reading it: a local file's size and mtime, as the raw index keeps
    them (a file replaced in place is fetched again); ``""`` for URLs and YouTube ids, fetched once."""
    try:
        kind, value = _classify(source, media_root)
    except MediaError as exc:
        return f"invalid: {exc.reason}"
    if kind != "local":
        return ""
    try:
        st = os.stat(value)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


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

    def commit(self, tmp: Path, digest: str, ext: str, mode: int = 0o644) -> Path:
        """Atomically publish ``tmp`` as the object for ``digest``: readers see all of it or nothing.

        ``mode``: a copy of a local file gets no wider permissions than the file (a 0600 file stays 0600).
        """
        dest = self.object_path(digest, ext)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and dest.stat().st_size == tmp.stat().st_size:
            return dest  # same bytes already stored (another source, or a concurrent fetch)
        os.chmod(tmp, mode & 0o644)
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


def _copy_hashing(
    src: IO[bytes], dst: IO[bytes], expected: int | None = None, budget: _Budget | None = None
) -> tuple[str, int]:
    """Stream ``src`` into ``dst`` in chunks, hashing on the way (one read of the data).

    With a ``budget`` the body stops at ``max_bytes`` and at the deadline; ``read1`` returns whatever has
    arrived, so the clock is checked while a slow body trickles in, not once a whole chunk is there.
    """
    h, size = hashlib.sha256(), 0
    read = getattr(src, "read1", src.read) if budget else src.read
    while chunk := read(_CHUNK):
        size += len(chunk)
        if budget:
            budget.take(size)
            budget.left()
        h.update(chunk)
        dst.write(chunk)
    if budget:
        budget.left()  # the watchdog ends a body by cutting its connection: what came is not all of it
    if expected is not None and size != expected:
        raise _Retryable(f"body truncated: {size} of {expected} bytes")
    dst.flush()
    os.fsync(dst.fileno())  # durable before it becomes visible under its final name
    return h.hexdigest(), size


def _confined(path: str, source: str, media_root: Path | None, policy: FetchPolicy) -> str:
    """The real path (symlinks followed) of local source ``path``, refused unless it lies inside the media
    root (the working directory without one): ``../../etc/passwd``, an absolute path or a symlink out of the
    root would copy any file the pipeline can read into the raw store, and from there into features."""
    real = os.path.realpath(path)
    if policy.allow_absolute_paths:
        return real
    root = os.path.realpath(media_root if media_root is not None else os.getcwd())
    advice = "set allow_absolute_paths for this dataset to allow it"
    if os.path.isabs(source.strip()):
        raise MediaError(f"absolute path refused (sources are relative to the media root {root}); {advice}")
    if os.path.commonpath([root, real]) != root:
        raise MediaError(f"resolves to {real}, outside the media root ({root}); {advice}", source)
    return real


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
            # O_NOFOLLOW: the checked real path must not have become a symlink since
            with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW)) as src:
                digest, size = _copy_hashing(src, fh)
        except OSError as exc:
            raise MediaError(f"cannot read: {exc}", source) from exc
        after = os.stat(path)
        changed = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
        if changed or size != after.st_size:
            raise MediaError("file changed while being copied; try again", source)
        dest = store.commit(tmp, digest, _safe_ext(Path(path).suffix), before.st_mode)
    store.record(key, source, dest, digest, size, before.st_mtime_ns)
    return dest


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect to ftp:; the store only trusts http(s)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise MediaError(f"refusing redirect to {newurl!r}", req.full_url)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _guarded_connect(policy: FetchPolicy, socks: list[socket.socket]) -> Callable[..., socket.socket]:
    """``socket.create_connection`` that connects only to addresses ``policy`` allows, and records them.

    The addresses are checked as resolved, right before connecting to them: a name resolving to 127.0.0.1, or
    a DNS answer that changes between a check and the connection (rebinding), reaches nothing internal.
    """

    def connect(address: tuple[str, int], timeout: Any = None, source_address: Any = None) -> socket.socket:
        host, port = address
        if host.lower().rstrip(".") in policy.allow_hosts:
            candidates = [address]
        else:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            checked = [(addr[:2], _address_refusal(host, str(addr[0]), policy)) for *_, addr in infos]
            candidates = [addr for addr, refusal in checked if refusal is None]
            if not candidates:
                raise MediaError(str(checked[0][1]))
        errors: list[OSError] = []
        for candidate in candidates:
            try:
                socks.append(socket.create_connection(candidate, timeout, source_address))
                return socks[-1]
            except OSError as exc:
                errors.append(exc)
        raise errors[-1]

    return connect


class _GuardedHandler(urllib.request.AbstractHTTPHandler):
    """Opens every connection of a download, the first and each redirect's, through ``connect``."""

    def __init__(self, connect: Callable[..., socket.socket]) -> None:
        super().__init__()
        self._connect = connect

    def do_open(
        self, http_class: Any, req: urllib.request.Request, **kwargs: Any
    ) -> http.client.HTTPResponse:
        def connection(host: str, **kw: Any) -> http.client.HTTPConnection:
            conn = http_class(host, **kw)
            conn._create_connection = self._connect  # http.client's seam for opening its socket
            return conn

        return super().do_open(connection, req, **kwargs)


class _GuardedHTTP(_GuardedHandler, urllib.request.HTTPHandler):
    pass


class _GuardedHTTPS(_GuardedHandler, urllib.request.HTTPSHandler):
    pass


def _opener(policy: FetchPolicy, socks: list[socket.socket]) -> urllib.request.OpenerDirector:
    """An opener for one download. No proxies from the environment: through a proxy, the address finally
    connected to could not be checked."""
    connect = _guarded_connect(policy, socks)
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), _HttpOnlyRedirects, _GuardedHTTP(connect), _GuardedHTTPS(connect)
    )


def _url_ext(url: str, content_type: str | None) -> str:
    suffix = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).suffix
    if _EXT.match(suffix.lower().lstrip(".")):
        return suffix.lower().lstrip(".")
    if content_type:
        guessed = mimetypes.guess_extension(content_type.split(";")[0].strip())
        return _safe_ext(guessed)
    return "bin"


def _download_once(
    url: str, store: _Store, opener: urllib.request.OpenerDirector, timeout: float, budget: _Budget
) -> tuple[Path, str, str, int]:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        resp = opener.open(request, timeout=min(timeout, budget.left()))
        with resp, store.temp_file() as (fh, tmp):
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None:
                budget.take(expected, announced=True)  # before a byte of the body is read
            digest, size = _copy_hashing(resp, fh, expected, budget)
            ext = _url_ext(resp.geturl(), resp.headers.get("Content-Type"))
            return store.commit(tmp, digest, ext), digest, ext, size
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise MediaError(f"HTTP {exc.code} {exc.reason}", url) from exc
    except (TimeoutError, urllib.error.URLError, http.client.HTTPException, ConnectionError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from exc


def _with_retries(fn: Callable[[], Any], source: str, retries: int, backoff: float, budget: _Budget) -> Any:
    """Call ``fn`` up to ``retries + 1`` times, sleeping ``backoff · 2^k`` between attempts, all within the
    budget's deadline (past it, the deadline is the reason rather than the failure it cut short)."""
    last: _Retryable | None = None
    for attempt in range(retries + 1):
        try:
            budget.left(last=last)
            return fn()
        except _Retryable as exc:
            last, left = exc, budget.left(last=exc)
            if attempt == retries:
                raise MediaError(f"giving up after {attempt + 1} attempts: {exc}", source) from exc
            time.sleep(min(backoff * 2**attempt, left))
    raise AssertionError("unreachable")


def _fetch_url(
    url: str, key: str, store: _Store, retries: int, timeout: float, backoff: float, policy: FetchPolicy
) -> Path:
    entry = store.lookup(key)
    if entry:
        return store.object_path(entry["digest"], entry["ext"])
    budget = _Budget(policy, url)
    opener = _opener(policy, budget.socks)
    with budget.watchdog():
        dest, digest, _, size = _with_retries(
            lambda: _download_once(url, store, opener, timeout, budget), url, retries, backoff, budget
        )
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
    (re.compile(r"^no complete download within deadline_s"), "deadline"),  # whatever the last error was
    (re.compile(r"^larger than max_bytes"), "too-large"),
    (re.compile(r"yt-dlp failed \[([a-z-]+)\]"), None),  # None: the bracketed category itself
    (re.compile(r"^refusing|outside the media root|^absolute path refused"), "refused"),
    (re.compile(r"\bHTTP (\d{3})\b"), "http-{}"),
    (re.compile(r"file not found|not a regular file"), "missing"),
    (re.compile(r"truncated|giving up after"), "network"),
)


def failure_category(reason: str) -> str:
    """A short category for a fetch failure ``reason`` (``MediaError.reason``), to count failures by.

    yt-dlp reasons carry their category (``private``, ``unavailable``, ``geo-blocked``, ``age-restricted``,
    ``rate-limited``, ``copyright``, ``login-required``, ``network``, ``other``); HTTP status errors become
    ``http-<code>``; a local file that is not there ``missing``; connection trouble ``network``; what the
    :class:`FetchPolicy` refuses ``refused`` (a path outside the media root, an internal address),
    ``too-large`` (over ``max_bytes``) or ``deadline`` (past ``deadline_s``).
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
        self.too_large: str | None = None  # yt-dlp skips a file over max_filesize with a mere message

    def debug(self, msg: str) -> None:
        if "larger than max-filesize" in msg:
            self.too_large = _clean_yt_message(msg)

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
    workdir: Path, logger: _YtLogger, *, timeout: float, retries: int, cookiefile: Path | None = None,
    max_bytes: int | None = None, progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
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
    if max_bytes is not None:
        options["max_filesize"] = max_bytes
    if progress is not None:
        options["progress_hooks"] = [progress]
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
    policy: FetchPolicy | None = None,
) -> tuple[Path, str, int]:
    """Download ``url`` with yt-dlp and publish it in the store; returns (object path, digest, size).

    Rate limits and network failures are retried ``retries`` times after ``backoff · 2^k`` seconds (each
    attempt resumes the partial files of the last); private, removed, geo-blocked … videos fail at once.
    ``policy``'s max_bytes and deadline apply (checked per file and at each progress report); its address
    check does not: yt-dlp talks to YouTube, and its own connections are out of reach.
    """
    import yt_dlp  # slow import, only when needed

    budget = _Budget(policy or FetchPolicy(), source)

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
            options = _ydl_options(
                workdir, logger, timeout=min(timeout, budget.left()), retries=retries, cookiefile=cookiefile,
                max_bytes=budget.policy.max_bytes, progress=budget.progress,
            )  # fmt: skip
            try:
                with yt_dlp.YoutubeDL(options) as ydl:
                    info = ydl.extract_info(url, download=True) or {}
            except MediaError:  # from the progress hook
                raise
            except Exception as exc:  # yt-dlp raises DownloadError and assorted internals
                budget.left(last=exc)  # past the deadline, that is the reason
                raise logger.failure(exc, source) from exc
            if logger.too_large:
                limit = budget.policy.max_bytes
                raise MediaError(f"larger than max_bytes={limit} ({logger.too_large})", source)
            return info

        info = _with_retries(attempt, source, retries, backoff, budget)
        partial = (".part", ".ytdl", ".txt")
        files = [p for p in workdir.iterdir() if p.is_file() and not p.name.endswith(partial)]
        if not files:
            raise MediaError("yt-dlp reported success but wrote no file", source)
        produced = max(files, key=lambda p: p.stat().st_size)
        budget.take(produced.stat().st_size)  # formats merged, or fragments of unknown size
        ext = _safe_ext(info.get("ext") or produced.suffix)
        with store.temp_file() as (fh, tmp), open(produced, "rb") as src:
            digest, size = _copy_hashing(src, fh)
            dest = store.commit(tmp, digest, ext)
    return dest, digest, size


def _fetch_youtube(
    vid: str, key: str, source: str, store: _Store, retries: int, timeout: float, backoff: float,
    cookies: Path | None, policy: FetchPolicy,
) -> Path:  # fmt: skip
    entry = store.lookup(key)
    if entry:
        return store.object_path(entry["digest"], entry["ext"])
    dest, digest, size = _yt_download(
        f"https://www.youtube.com/watch?v={vid}", source, store, retries=retries, timeout=timeout,
        backoff=max(backoff, YT_MIN_BACKOFF), cookies=cookies, policy=policy,
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
    policy: FetchPolicy | None = None,
) -> Path:
    """Make ``source`` available in the raw store and return ``raw_root/<sha[:2]>/<sha>.<ext>``.

    Idempotent: a source already in the index is not fetched again (a local file only if its size or
    mtime changed). Writes are atomic, so an interrupted download never leaves a file that looks complete.
    ``retries`` is the number of extra attempts for transient network failures, ``backoff`` the first wait
    in seconds (doubling each time; at least :data:`YT_MIN_BACKOFF` for YouTube). ``cookies`` is a
    Netscape cookies file for YouTube (age-restricted videos, "not a bot" checks), only read. ``policy``
    (default :class:`FetchPolicy`'s defaults) keeps local paths in ``media_root``, http(s) off internal
    addresses, and downloads within ``max_bytes`` and ``deadline_s``.
    Raises :class:`MediaError` for anything that cannot be fetched (:func:`failure_category` sorts them).
    """
    if retries < 0:
        raise ValueError("retries must be >= 0")
    policy = policy or FetchPolicy()
    kind, value = _classify(source, media_root)
    key = f"{kind}:{value}"
    store = _Store(raw_root)
    try:
        if kind == "local":  # confined before the index is read: an old entry must not serve it either
            return _fetch_local(_confined(value, source, media_root, policy), key, source, store)
        if kind == "url":
            return _fetch_url(value, key, store, retries, timeout, backoff, policy)
        cookie_path = Path(cookies).expanduser() if cookies is not None else None
        return _fetch_youtube(value, key, source, store, retries, timeout, backoff, cookie_path, policy)
    except MediaError as exc:
        if exc.video_id is None:
            exc.video_id = source
        raise
    except OSError as exc:  # the store itself (disk full, permissions) rather than the source
        raise MediaError(f"raw store error: {exc}", source) from exc
