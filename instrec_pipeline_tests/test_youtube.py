"""YouTube fetching through yt-dlp, offline: yt-dlp's generic extractor downloads from a loopback HTTP
server (the code path is the one production takes for ``https://www.youtube.com/watch?v=<id>``), and
the YouTube-specific parts (JS runtime, format, cookies, failure wording) are checked without YouTube."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import instrec_pipeline.media.fetch as fetch_mod
from instrec_pipeline.media.errors import MediaError
from instrec_pipeline.media.fetch import YT_FORMAT, FetchPolicy, failure_category, fetch
from instrec_pipeline_tests.loopback import loopback_server

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 2 s, 320×240 H.264 + AAC mp4 (about 20 kB)."""
    out = tmp_path_factory.mktemp("yt") / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc=duration=2:size=320x240:rate=10", "-f", "lavfi", "-i", "sine=duration=2",
         "-c:v", "libx264", "-c:a", "aac", "-shortest", str(out)],
        check=True,
    )  # fmt: skip
    return out.read_bytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    clip = b""
    limited = 2  # /limited.mp4 answers 429 this many times, then the clip
    requests: Counter[str] = Counter()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, body: bool) -> None:
        n = self.requests[self.path] = self.requests[self.path] + 1
        if self.path == "/clip.mp4" or (self.path == "/limited.mp4" and n > self.limited):
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(self.clip)))
            self.end_headers()
            if body:
                self.wfile.write(self.clip)
        elif self.path == "/limited.mp4":
            self.send_error(429, "Too Many Requests")
        else:
            self.send_error(404)

    def do_GET(self) -> None:
        self._reply(body=True)

    def do_HEAD(self) -> None:
        self._reply(body=False)


@pytest.fixture
def server(clip: bytes) -> Iterator[str]:
    _Handler.clip, _Handler.limited, _Handler.requests = clip, 2, Counter()
    with loopback_server(_Handler) as url:
        yield url


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment must not take the loopback requests elsewhere."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def _download(url: str, raw: Path, **kwargs: object) -> tuple[Path, str, int]:
    options: dict = {"retries": 0, "timeout": 10, "backoff": 0.01} | kwargs
    return fetch_mod._yt_download(url, "yt:test", fetch_mod._Store(raw), **options)


def test_download_lands_in_the_raw_store(server: str, clip: bytes, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    dest, digest, size = _download(f"{server}/clip.mp4", raw)
    assert digest == hashlib.sha256(clip).hexdigest() and size == len(clip)
    assert dest == raw / digest[:2] / f"{digest}.mp4" and dest.read_bytes() == clip
    assert not list((raw / ".tmp").iterdir())  # the work dir is gone


def test_format_takes_at_most_480p_video_and_the_audio_merged_into_one_file(tmp_path: Path) -> None:
    """A DASH manifest offers 240p and 720p video and a separate audio track, as YouTube does."""
    site = tmp_path / "site"
    site.mkdir()
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc=duration=2:size=1280x720:rate=10", "-f", "lavfi", "-i", "sine=duration=2",
         "-map", "0:v", "-map", "0:v", "-map", "1:a", "-s:v:0", "320x240", "-s:v:1", "1280x720",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest",
         "-f", "dash", "-adaptation_sets", "id=0,streams=v id=1,streams=a", str(site / "clip.mpd")],
        check=True,
    )  # fmt: skip

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        dest, _, _ = _download(f"http://127.0.0.1:{httpd.server_address[1]}/clip.mpd", tmp_path / "raw")
    finally:
        httpd.shutdown()
        httpd.server_close()
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,height", "-of", "json", str(dest)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    streams = json.loads(probe.stdout)["streams"]
    assert dest.suffix == ".mp4" and sorted(s["codec_type"] for s in streams) == ["audio", "video"]
    assert [s["height"] for s in streams if s["codec_type"] == "video"] == [240]


def test_fetch_youtube_source_is_recorded_and_cookies_are_only_read(
    server: str, clip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls: list[str] = []
    real = fetch_mod._yt_download

    def via_loopback(url: str, *args: object, **kwargs: object) -> tuple[Path, str, int]:
        urls.append(url)
        assert kwargs["backoff"] >= fetch_mod.YT_MIN_BACKOFF  # YouTube's rate limits need longer waits
        return real(f"{server}/clip.mp4", *args, **kwargs | {"backoff": 0.01})  # type: ignore[arg-type]

    monkeypatch.setattr(fetch_mod, "_yt_download", via_loopback)
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\tabc\n")
    before = cookies.read_bytes(), cookies.stat().st_mtime_ns
    raw = tmp_path / "raw"
    out = fetch("yt:dQw4w9WgXcQ", raw, cookies=cookies, retries=0)
    assert out.read_bytes() == clip and urls == ["https://www.youtube.com/watch?v=dQw4w9WgXcQ"]
    assert (cookies.read_bytes(), cookies.stat().st_mtime_ns) == before  # yt-dlp saved into its copy
    assert fetch("youtube:dQw4w9WgXcQ", raw) == out and len(urls) == 1  # from the index
    with pytest.raises(MediaError, match="cookies file") as excinfo:
        fetch("yt:aaaaaaaaaaa", raw, cookies=tmp_path / "nope.txt")
    assert excinfo.value.video_id == "yt:aaaaaaaaaaa"


def test_404_fails_at_once_with_a_category(server: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(MediaError, match=r"yt-dlp failed \[unavailable\]: .*HTTP Error 404") as excinfo:
        _download(f"{server}/gone.mp4", tmp_path / "raw", retries=3, backoff=5)
    assert time.monotonic() - t0 < 5  # permanent: not retried, no back-off
    assert _Handler.requests["/gone.mp4"] == 1
    assert failure_category(excinfo.value.reason) == "unavailable"
    assert not [p for p in (tmp_path / "raw").glob("??/*")]


def test_rate_limit_is_retried_with_backoff(server: str, clip: bytes, tmp_path: Path) -> None:
    t0 = time.monotonic()
    dest, _, _ = _download(f"{server}/limited.mp4", tmp_path / "raw", retries=3, backoff=0.1)
    assert dest.read_bytes() == clip
    assert time.monotonic() - t0 >= 0.1 + 0.2  # slept 0.1 then 0.2 after the two 429s
    assert _Handler.requests["/limited.mp4"] >= 3

    _Handler.limited, _Handler.requests = 10**6, Counter()
    given_up = r"giving up after 2 attempts: yt-dlp failed \[rate-limited\]"
    with pytest.raises(MediaError, match=given_up) as exc:
        _download(f"{server}/limited.mp4", tmp_path / "raw2", retries=1, backoff=0.01)
    assert "429" in exc.value.reason and failure_category(exc.value.reason) == "rate-limited"
    assert _Handler.requests["/limited.mp4"] == 2


def test_rate_limit_retries_stop_at_the_deadline(server: str, tmp_path: Path) -> None:
    _Handler.limited = 10**6
    t0 = time.monotonic()
    with pytest.raises(MediaError, match=r"no complete download within deadline_s=1\.5 s .*429") as exc:
        _download(f"{server}/limited.mp4", tmp_path / "raw", retries=50, backoff=1,
                  policy=FetchPolicy(deadline_s=1.5))  # fmt: skip
    assert 1.5 <= time.monotonic() - t0 < 4  # 50 retries with doubling back-off would take for ever
    assert failure_category(exc.value.reason) == "deadline"


def test_max_bytes_reaches_yt_dlp(server: str, clip: bytes, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    with pytest.raises(MediaError, match=f"larger than max_bytes=1000 .*{len(clip)} bytes") as exc:
        _download(f"{server}/clip.mp4", raw, policy=FetchPolicy(max_bytes=1000))
    assert failure_category(exc.value.reason) == "too-large"
    assert not list(raw.glob("??/*")) and not list((raw / ".tmp").iterdir())
    assert _download(f"{server}/clip.mp4", raw, policy=FetchPolicy(max_bytes=len(clip)))[2] == len(clip)


# Messages as yt-dlp words them (ERROR: prefix, extractor tag, YouTube's reason and yt-dlp's hints).
_HINT = "Use --cookies-from-browser or --cookies for the authentication. See  https://github.com/yt-dlp/yt-dlp/wiki/FAQ"
_MESSAGES = {
    "private": f"ERROR: [youtube] abcdefghijk: Private video. Sign in if you've been granted access to this "
    f"video. {_HINT}",
    "unavailable": "ERROR: [youtube] abcdefghijk: Video unavailable. This video has been removed by the "
    "uploader",
    "geo-blocked": "ERROR: [youtube] abcdefghijk: The uploader has not made this video available in your "
    "country. This video is available in Germany, France. You might want to use a VPN or a proxy server "
    "(with --proxy) to workaround.",
    "rate-limited": f"ERROR: [youtube] abcdefghijk: Sign in to confirm you\u2019re not a bot. {_HINT}",
    "age-restricted": "ERROR: [youtube] abcdefghijk: Sign in to confirm your age. This video may be "
    f"inappropriate for some users. {_HINT}",
    "copyright": "ERROR: [youtube] abcdefghijk: Video unavailable. This video contains content from SME, who "
    "has blocked it on copyright grounds",
    "login-required": "ERROR: [youtube] abcdefghijk: Join this channel to get access to members-only content "
    "like this video, and other exclusive perks.",
    "network": "ERROR: [youtube] abcdefghijk: Unable to download API page: [Errno -3] Temporary failure in "
    "name resolution (caused by TransportError('[Errno -3] Temporary failure in name resolution'))",
    "other": "ERROR: [youtube] abcdefghijk: Requested format is not available. Use --list-formats for a list "
    "of available formats",
}
_MORE = [
    ("unavailable", "ERROR: [youtube] abcdefghijk: Video unavailable. This video is no longer available "
                    "because the YouTube account associated with this video has been terminated."),
    ("geo-blocked", "ERROR: [generic] x: This video is not available from your location due to geo "
                    "restriction"),
    ("rate-limited", "ERROR: [youtube] abcdefghijk: This content isn't available, try again later. The "
                     "current session has been rate-limited by YouTube for up to an hour."),
    ("rate-limited", "ERROR: [youtube] abcdefghijk: Unable to download API page: HTTP Error 429: Too Many "
                     "Requests (caused by <HTTPError 429: Too Many Requests>)"),
    ("network", "ERROR: unable to download video data: HTTP Error 503: Service Unavailable"),
]  # fmt: skip


@pytest.mark.parametrize(("category", "message"), [*_MESSAGES.items(), *_MORE])
def test_yt_dlp_messages_are_categorised(category: str, message: str) -> None:
    logger = fetch_mod._YtLogger()
    logger.error(message)
    failure = logger.failure(Exception(message))
    assert isinstance(failure, fetch_mod._Retryable) == (category in ("rate-limited", "network"))
    reason = str(failure) if isinstance(failure, fetch_mod._Retryable) else failure.reason
    assert reason == f"yt-dlp failed [{category}]: " + " ".join(message.removeprefix("ERROR: ").split())
    assert failure_category(reason) == category
    assert failure_category(f"giving up after 4 attempts: {reason}") == category


def test_warnings_are_kept_in_the_reason() -> None:
    logger = fetch_mod._YtLogger()
    for i in range(5):
        logger.warning(f"warning {i}")
    logger.warning("[youtube] abcdefghijk: n challenge solving failed: Some formats may be missing.")
    logger.error("ERROR: [youtube] abcdefghijk: Requested format is not available.")
    failure = logger.failure(Exception("x"))
    assert isinstance(failure, MediaError) and failure.reason.startswith("yt-dlp failed [other]: [youtube]")
    assert "warning 3 | warning 4 | [youtube] abcdefghijk: n challenge" in failure.reason
    assert "warning 2" not in failure.reason  # only the last few
    # an error without a category of its own takes one from the warnings
    logger = fetch_mod._YtLogger()
    logger.warning("[youtube] abcdefghijk: Sign in to confirm you're not a bot.")
    assert isinstance(logger.failure(Exception("ERROR: something odd")), fetch_mod._Retryable)


@pytest.mark.parametrize(
    ("reason", "category"),
    [("HTTP 404 Not Found", "http-404"), ("giving up after 4 attempts: HTTP 503 busy", "http-503"),
     ("giving up after 2 attempts: URLError: [Errno 111] Connection refused", "network"),
     ("giving up after 3 attempts: body truncated: 5 of 10 bytes", "network"),
     ("file not found", "missing"), ("unsupported source scheme 'ftp'", "other"),
     ("resolves to /etc/passwd, outside the media root (/m); set allow_absolute_paths …", "refused"),
     ("absolute path refused (sources are relative to the media root /m); …", "refused"),
     ("refusing to connect to 'localhost': 127.0.0.1 is a loopback address …", "refused"),
     ("refusing redirect to 'ftp://x/a.mp4'", "refused"),
     ("larger than max_bytes=1000 (Content-Length 5000 bytes); raise max_bytes …", "too-large"),
     ("no complete download within deadline_s=2 s (last error: HTTP 503 busy)", "deadline"),
     ("TypeError: boom", "other")],
)  # fmt: skip
def test_failure_category_of_other_sources(reason: str, category: str) -> None:
    assert failure_category(reason) == category


def test_options_for_yt_dlp(tmp_path: Path) -> None:
    logger = fetch_mod._YtLogger()
    options = fetch_mod._ydl_options(tmp_path, logger, timeout=7, retries=2)
    assert options["format"] == YT_FORMAT and "height<=480" in YT_FORMAT and "+ba" in YT_FORMAT
    assert options["merge_output_format"].startswith("mp4") and options["logger"] is logger
    assert options["remote_components"] == []  # solver scripts come from yt-dlp-ejs, not the network
    assert "cookiefile" not in options and options["socket_timeout"] == 7 and "max_filesize" not in options
    limited = fetch_mod._ydl_options(tmp_path, logger, timeout=7, retries=2, max_bytes=10**6, progress=print)
    assert limited["max_filesize"] == 10**6 and limited["progress_hooks"] == [print]
    deno = Path(options["js_runtimes"]["deno"]["path"])
    assert deno.is_file() and os.access(deno, os.X_OK)
    assert "deno" in subprocess.run([deno, "--version"], capture_output=True, text=True, check=True).stdout
    cookies = tmp_path / "cookies.txt"
    with_cookies = fetch_mod._ydl_options(tmp_path, logger, timeout=7, retries=2, cookiefile=cookies)
    assert with_cookies["cookiefile"] == str(cookies)


def test_yt_dlp_finds_its_challenge_solver(tmp_path: Path) -> None:
    """yt-dlp accepts the options, sees deno, and the yt-dlp-ejs scripts are the version it expects."""
    import yt_dlp
    import yt_dlp_ejs
    from yt_dlp.extractor.youtube.jsc._builtin.vendor import VERSION

    options = fetch_mod._ydl_options(tmp_path, fetch_mod._YtLogger(), timeout=5, retries=0)
    with yt_dlp.YoutubeDL(options) as ydl:
        runtime = ydl._js_runtimes["deno"]
        assert runtime is not None and runtime.info is not None and runtime.info.supported is not False
    assert yt_dlp_ejs.version.split(".")[:2] == VERSION.split(".")[:2]
