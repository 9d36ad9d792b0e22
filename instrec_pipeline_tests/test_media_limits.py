"""Media limits: ffmpeg reads only the file we name, and inputs are bounded before anything is decoded.

A playlist (or any other indirection) must not make ffmpeg read a file outside the store or fetch a URL,
whatever the playlist is called; a tiny file claiming hours is refused by ``max_duration_s``; a spool
that would not fit on disk is refused before decoding. Media is generated with ffmpeg's lavfi sources;
the only server is on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import subprocess
import threading
import urllib.request
from collections import Counter, namedtuple
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from instrec_pipeline.media.demux import _DISK_MARGIN, DemuxParams, demux, demux_to_spool, iter_frames
from instrec_pipeline.media.errors import MediaError
from instrec_pipeline.media.probe import probe
from instrec_pipeline.store import FrameCodec

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

SMALL = DemuxParams(resize=32, crop=32, sample_rates=(8000,))


def ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *map(str, args)], check=True)


def hls(*segments: str) -> str:
    entries = "".join(f"#EXTINF:1.0,\n{s}\n" for s in segments)
    return f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n{entries}#EXT-X-ENDLIST\n"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-s 64x48 mp4 with a tone: the 'outside' file a playlist names, and a normal input."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x48:r=5:d=1", "-f", "lavfi", "-i", "sine=d=1",
           "-c:v", "libx264", "-c:a", "aac", path)  # fmt: skip
    return path


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The command lines of the processes started from here on (ffprobe, ffmpeg), via subprocess.Popen."""
    commands: list[list[str]] = []
    real = subprocess.Popen

    def spy(args: list[str], *a: object, **kw: object) -> subprocess.Popen:
        commands.append([str(x) for x in args])
        return real(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", spy)
    return commands


def _every_entry_point(path: Path, params: DemuxParams, spool: Path) -> list[Callable[[], object]]:
    return [
        lambda: demux(path, params),
        lambda: demux_to_spool(path, params, spool),
        lambda: next(iter_frames(path, params)),
        lambda: probe(path, max_duration_s=params.max_duration_s),
    ]


def _decoders(commands: list[list[str]]) -> list[list[str]]:
    return [c for c in commands if Path(c[0]).name == "ffmpeg"]


@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [("list.m3u8", "hls", "unsupported file type '.m3u8'"),
     ("list.mp4", "hls", "unsupported container 'hls'"),  # a playlist stored under a video's name
     ("list.mp4", "ffconcat", "unsupported container 'concat'")],
)  # fmt: skip
def test_local_playlist_naming_an_outside_file_is_refused(
    clip: Path, tmp_path: Path, started: list[list[str]], name: str, kind: str, reason: str
) -> None:
    outside = tmp_path / "outside" / "secret.mp4"
    outside.parent.mkdir()
    shutil.copy(clip, outside)
    playlist = tmp_path / "root" / name
    playlist.parent.mkdir()
    text = hls(str(outside)) if kind == "hls" else f"ffconcat version 1.0\nfile '{outside}'\n"
    playlist.write_text(text)
    started.clear()
    spool = tmp_path / "spool"
    for run in _every_entry_point(playlist, SMALL, spool):
        with pytest.raises(MediaError) as excinfo:
            run()
        assert excinfo.value.reason == f"{reason} (playlists and other indirections are refused)"
    assert _decoders(started) == []  # nothing decoded: refused at probe time
    if name.endswith(".m3u8"):
        assert started == []  # refused by name: nothing ran
    assert not list(spool.iterdir())


def test_http_playlist_is_refused_and_nothing_is_fetched(
    clip: Path, tmp_path: Path, started: list[list[str]]
) -> None:
    requests: Counter[str] = Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            requests[self.path] += 1

    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(clip, site / "x.mp4")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        for name in ("list.m3u8", "list.mp4"):
            (site / name).write_text(hls(f"{url}/x.mp4"))
        # playlists downloaded over http and stored as the raw store names them, <sha>.<ext> (.m3u8, or as a
        # video), and a local one
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, no proxy
        paths = []
        for name in ("list.m3u8", "list.mp4"):
            body = opener.open(f"{url}/{name}", timeout=10).read()
            paths.append(tmp_path / f"{hashlib.sha256(body).hexdigest()}{Path(name).suffix}")
            paths[-1].write_bytes(body)
        paths.append(tmp_path / "local.mp4")
        paths[-1].write_text(hls(f"{url}/x.mp4"))
        assert sorted(requests.elements()) == ["/list.m3u8", "/list.mp4"]
        as_hls = "unsupported container 'hls'"
        refusals = ["unsupported file type '.m3u8'", as_hls, as_hls]
        for path, reason in zip(paths, refusals, strict=True):
            with pytest.raises(MediaError) as excinfo:
                demux(path, SMALL)
            assert excinfo.value.reason == f"{reason} (playlists and other indirections are refused)"
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "/x.mp4" not in requests and sorted(requests.elements()) == ["/list.m3u8", "/list.mp4"]
    assert _decoders(started) == []


def test_claimed_duration_is_bounded_before_decoding(
    clip: Path, tmp_path: Path, started: list[list[str]]
) -> None:
    assert DemuxParams().max_duration_s == 7200
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            DemuxParams(max_duration_s=bad)
    hour, days = tmp_path / "hour.mkv", tmp_path / "days.mkv"
    ffmpeg("-i", clip, "-output_ts_offset", 3600, "-c", "copy", hour)  # one timestamp: 1 s claims 3601 s
    ffmpeg("-i", clip, "-output_ts_offset", 360000, "-c", "copy", days)
    assert hour.stat().st_size < 30_000 and days.stat().st_size < 30_000
    assert probe(hour).duration == pytest.approx(3601)  # probing alone sets no limit
    started.clear()
    params = DemuxParams(resize=32, crop=32, sample_rates=(8000,), max_duration_s=3600)
    reason = "duration 3601 s exceeds max_duration_s 3600 s"
    for run in _every_entry_point(hour, params, tmp_path / "spool"):
        with pytest.raises(MediaError, match=reason):
            run()
    with pytest.raises(MediaError, match="duration 360001 s exceeds max_duration_s 7200 s"):
        demux(days, SMALL)  # the default limit
    assert _decoders(started) == []
    assert not list((tmp_path / "spool").iterdir())


Usage = namedtuple("Usage", "total used free")


def test_spool_refused_when_disk_space_is_short(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[list[str]]
) -> None:
    seen: list[Path] = []

    def disk_usage(path: Path) -> Usage:
        seen.append(Path(path))
        return Usage(100 << 30, (100 << 30) - (500 << 20), 500 << 20)  # 500 MB free: less than the margin

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)  # the module demux_to_spool asks
    spool = tmp_path / "spool"
    started.clear()
    with pytest.raises(MediaError, match="not enough disk space") as excinfo:
        demux_to_spool(clip, SMALL, spool)
    assert "500 MB free" in excinfo.value.reason and seen == [spool]
    assert _decoders(started) == [] and not list(spool.iterdir())


def test_frames_encoded_on_arrival_never_touch_the_spool(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a codec's ``encode``, frames go from ffmpeg's pipe through it into memory: no raw frames on
    the spool's disk nor in its space check, and the same rows as encoding the demuxed frames."""
    codec = FrameCodec()
    spool = tmp_path / "spool"
    spooled = demux_to_spool(clip, SMALL, spool, encode=codec.encode)
    assert spooled.frames_file is None and [p.name for p in spool.iterdir()] == ["audio_8000.f32"]
    rows = np.concatenate(list(spooled.frame_chunks()))
    assert spooled.n_frames == 1 and list(rows) == list(codec.encode(demux(clip, SMALL).frames))

    audio_bytes, frame_bytes = 4 * 8000, 32 * 32 * 3
    free = _DISK_MARGIN + audio_bytes + frame_bytes // 2  # room for the audio, not for raw frames too
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100 << 30, 0, free))
    with pytest.raises(MediaError, match="not enough disk space"):
        demux_to_spool(clip, SMALL, tmp_path / "raw")
    assert demux_to_spool(clip, SMALL, tmp_path / "encoded", encode=codec.encode).n_frames == 1


def test_normal_inputs_still_demux_under_the_whitelists(
    clip: Path, tmp_path: Path, started: list[list[str]]
) -> None:
    unnamed, binary = tmp_path / "unnamed", tmp_path / "abc.bin"  # no usable extension: the content decides
    shutil.copy(clip, unnamed)
    shutil.copy(clip, binary)
    started.clear()
    spooled = demux_to_spool(clip, SMALL, tmp_path / "spool")
    assert spooled.n_frames == 1 and abs(spooled.audio_files[8000].stat().st_size // 4 - 8000) < 400
    reference = demux(clip, SMALL)
    for path in (unnamed, binary):
        d = demux(path, SMALL)
        np.testing.assert_array_equal(d.frames, reference.frames)
    assert started
    for command in started:  # every ffprobe/ffmpeg run opens its input under both whitelists
        before = command[: command.index("-i")] if "-i" in command else command[:-1]  # ffprobe: input last
        options = dict(zip(before, before[1:], strict=False))
        assert options["-protocol_whitelist"] == "file"
        assert "mov" in options["-format_whitelist"].split(",") and "hls" not in options["-format_whitelist"]


def test_one_process_per_video_and_the_in_process_probe_uses_the_whitelists(
    clip: Path, tmp_path: Path, started: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe runs in-process (PyAV), so a video costs one process, ffmpeg's, and the probe's own open
    is bound by the same whitelists as ffmpeg's."""
    import av

    opened: list[dict[str, str]] = []
    real = av.open

    def spy(file: str, *args: object, **kwargs: object) -> object:
        opened.append(dict(kwargs.get("options") or {}))  # type: ignore[call-overload]
        return real(file, *args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    started.clear()
    spooled = demux_to_spool(clip, SMALL, tmp_path / "spool")
    assert spooled.n_frames == 1 and [Path(c[0]).name for c in started] == ["ffmpeg"]
    assert opened and all(
        o["protocol_whitelist"] == "file" and "hls" not in o["format_whitelist"].split(",") for o in opened
    )
