"""Media stage: probe, demux (frame instants, geometry, colour, audio) and fetch (raw store, HTTP, yt).

All media is generated with ffmpeg's lavfi sources into temporary directories; the HTTP tests run a real
server on 127.0.0.1. Nothing touches the network.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import instrec_pipeline.media.fetch as fetch_mod
from instrec_pipeline.media import torchcodec_frames
from instrec_pipeline.media.demux import (
    Demuxed,
    DemuxParams,
    demux,
    demux_to_spool,
    expected_frame_count,
    frame_instants,
    iter_frames,
)
from instrec_pipeline.media.errors import MediaError
from instrec_pipeline.media.fetch import FetchPolicy, fetch, source_key
from instrec_pipeline.media.probe import probe
from instrec_pipeline_tests.loopback import loopback_server

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *map(str, args)], check=True)


# --------------------------------------------------------------------------------------------------------
# Timestamp-labelled videos: every frame shows its source frame number N, in base 4, as four grey stripes
# (12 rows each, levels 32/96/160/224), which survive lossy coding. Decoding the stripes of a demuxed frame
# tells exactly which source frame was picked.
# --------------------------------------------------------------------------------------------------------

LABEL = "geq=lum='32+64*mod(floor(N/pow(4\\,floor(Y/12)))\\,4)':cb=128:cr=128"
VFR_KEEP = "lt(mod(n*7\\,11)\\,6)*not(between(n\\,40\\,80))"  # irregular drops plus a 1.4 s gap


def _vfr_kept(n: int) -> bool:
    return (n * 7) % 11 < 6 and not 40 <= n <= 80


def read_labels(frames: np.ndarray) -> list[int]:
    out = []
    for frame in frames:
        grey = frame[..., 1].astype(np.float64)
        digits = [int(round((grey[12 * k + 4 : 12 * k + 8, 20:28].mean() - 32) / 64)) for k in range(4)]
        out.append(sum(d * 4**k for k, d in enumerate(digits)))
    return out


TIMING_CASES = {
    # name: (file, rate, duration, codec args, vfr, expected frame count)
    "25fps_7.4s_mkv_h264": ("t25.mkv", Fraction(25), 7.4, ["-c:v", "libx264"], False, 7),
    "ntsc_7.6s_mp4_h264": ("tntsc.mp4", Fraction(30000, 1001), 7.6, ["-c:v", "libx264"], False, 8),
    "10fps_3.0s_webm_vp9": (
        "t10.webm", Fraction(10), 3.0, ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"],
        False, 3,
    ),
    "vfr_7.6s_mp4_h264": ("tvfr.mp4", Fraction(30), 7.6, ["-c:v", "libx264", "-fps_mode", "vfr"], True, 8),
}  # fmt: skip


@pytest.fixture(scope="module")
def timing_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("timing")
    for file, rate, duration, codec, vfr, _ in TIMING_CASES.values():
        chain = f"nullsrc=s=64x48:r={rate}:d={duration},{LABEL}" + (f",select='{VFR_KEEP}'" if vfr else "")
        ffmpeg("-f", "lavfi", "-i", chain, *codec, "-pix_fmt", "yuv420p", root / file)
    return root


@pytest.mark.parametrize("geometry", ["squash", "shorter_side"])
@pytest.mark.parametrize("case", list(TIMING_CASES))
def test_frames_are_the_ones_on_screen_at_the_half_second_instants(
    timing_dir: Path, case: str, geometry: str
) -> None:
    """The frame instants, counts and exact square shape do not depend on the geometry."""
    file, rate, duration, _, vfr, count = TIMING_CASES[case]
    d = demux(timing_dir / file, DemuxParams(resize=48, crop=48, sample_rates=(), geometry=geometry))
    assert len(d.frames) == count == expected_frame_count(d.info.duration)
    assert d.frames.shape == (count, 48, 48, 3) and d.frames.dtype == np.uint8
    np.testing.assert_allclose(d.frame_times, np.arange(count) + 0.5)
    assert d.audio == {}
    # Source frame N is shown from N/rate on; the expected pick is the last one with N/rate <= t.
    total = int(np.ceil(duration * rate))
    shown = [n for n in range(total) if not vfr or _vfr_kept(n)]
    expected = [max(n for n in shown if Fraction(n) / rate <= Fraction(t)) for t in d.frame_times]
    assert read_labels(d.frames) == expected
    if case.startswith("10fps"):
        assert expected == [5, 15, 25]  # frames exactly on an instant count as shown (t <= t_i)
    if vfr:
        assert expected[1] == expected[2] == 38  # the gap repeats the last frame before it


def test_iter_frames_streams_the_same_frames_in_batches(timing_dir: Path) -> None:
    params = DemuxParams(resize=48, crop=48)
    batches = list(iter_frames(timing_dir / "t25.mkv", params, batch=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(batches), demux(timing_dir / "t25.mkv", params).frames)
    it = iter_frames(timing_dir / "tvfr.mp4", params, batch=2)
    assert len(next(it)) == 2
    it.close()  # stopping early kills ffmpeg and cleans up without error


@pytest.mark.parametrize(
    ("duration", "fps", "count"),
    [(3.0, 1, 3), (7.4, 1, 7), (7.6, 1, 8), (7.5, 1, 7), (7.5000000001, 1, 7), (7.5001, 1, 8), (0.3, 1, 1),
     (1.0, 1, 1), (1.5, 1, 1), (3.0, 2, 6), (10.0, 0.25, 2), (0.0, 1, 0)],
)  # fmt: skip
def test_expected_frame_count(duration: float, fps: float, count: int) -> None:
    assert expected_frame_count(duration, fps) == count
    assert len(frame_instants(duration, fps)) == count


def test_video_shorter_than_half_a_second_gives_its_last_frame(tmp_path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", f"nullsrc=s=64x48:r=25:d=0.3,{LABEL}", "-c:v", "libx264", tmp_path / "s.mp4")
    d = demux(tmp_path / "s.mp4", DemuxParams(resize=48, crop=48))
    assert read_labels(d.frames) == [7] and d.frame_times.tolist() == [pytest.approx(0.32)]


def test_video_stream_shorter_than_audio_repeats_last_frame(tmp_path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", f"nullsrc=s=64x48:r=10:d=2,{LABEL}", "-f", "lavfi", "-i", "sine=d=4",
           "-c:v", "libx264", "-c:a", "flac", tmp_path / "a.mkv")  # fmt: skip
    d = demux(tmp_path / "a.mkv", DemuxParams(resize=48, crop=48, sample_rates=(8000,)))
    assert read_labels(d.frames) == [5, 15, 19, 19]  # what a player shows once the video has ended
    assert abs(len(d.audio[8000]) - 32000) <= 4


# --------------------------------------------------------------------------------------------------------
# Containers, codecs, geometry, colour
# --------------------------------------------------------------------------------------------------------

FORMATS = {
    "mp4_h264_aac": ("v.mp4", ["-c:v", "libx264", "-c:a", "aac"], 48000, 1, True),
    "webm_vp9_opus": ("v.webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                                 "-c:a", "libopus"], 48000, 1, True),
    "mkv_h264_flac51": ("v.mkv", ["-c:v", "libx264", "-c:a", "flac"], 8000, 6, False),
    "mov_mjpeg_pcm": ("v.mov", ["-c:v", "mjpeg", "-c:a", "pcm_s16le"], 8000, 1, False),
    "avi_mpeg4_mp3": ("v.avi", ["-c:v", "mpeg4", "-c:a", "libmp3lame"], 48000, 1, True),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FORMATS))
def test_containers_and_codecs(tmp_path: Path, case: str) -> None:
    file, codec, sr, channels, lossy = FORMATS[case]
    # 5.1 with the tone in FL only: an average of all six channels has 1/6 of its amplitude.
    layout = ["-af", "pan=5.1|FL=c0"] if channels == 6 else []
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=2", "-f", "lavfi", "-i", f"sine=f=440:r={sr}:d=2",
           *layout, *codec, tmp_path / file)  # fmt: skip
    info = probe(tmp_path / file)
    assert info.has_video and info.has_audio and (info.width, info.height) == (96, 64)
    assert info.sample_rate == sr and info.channels == channels
    assert info.duration == pytest.approx(2, abs=0.05)
    d = demux(tmp_path / file)
    assert d.frames.shape == (2, 224, 224, 3) and d.frames.dtype == np.uint8
    assert sorted(d.audio) == [12000, 22050]
    for rate, audio in d.audio.items():
        assert audio.dtype == np.float32 and audio.ndim == 1 and np.abs(audio).max() <= 1
        # lossless: exact to a few samples; lossy codecs add up to one frame of encoder delay/padding
        assert abs(len(audio) - 2 * rate) <= (0.05 * rate if lossy else 4)
        peak = np.abs(audio[rate // 10 : -rate // 10]).max()
        assert peak == pytest.approx(0.125 / channels, rel=0.1 if lossy else 0.02)  # lavfi sine: 1/8


def test_stereo_is_averaged_to_mono(tmp_path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "sine=f=1000:r=48000:d=1", "-af", "pan=stereo|c0=c0|c1=0*c0",
           "-c:a", "pcm_s16le", tmp_path / "lr.wav")  # fmt: skip
    d = demux(tmp_path / "lr.wav", DemuxParams(sample_rates=(48000, 8000)))
    assert d.frames.shape == (0, 224, 224, 3) and d.frame_times.shape == (0,)  # audio-only
    assert d.info.channels == 2 and not d.info.has_video
    for rate, audio in d.audio.items():
        assert len(audio) == rate
        rms = float(np.sqrt(np.mean(audio[100:-100].astype(np.float64) ** 2)))
        assert rms == pytest.approx(0.125 / 2 / np.sqrt(2), rel=0.01)  # half the left channel's RMS


def test_pure_red_is_red(tmp_path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x64:r=5:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           tmp_path / "red.mp4")  # fmt: skip
    frame = demux(tmp_path / "red.mp4").frames[0].reshape(-1, 3).mean(axis=0)
    assert frame[0] > 230 and frame[1] < 30 and frame[2] < 30


def _bar(frame: np.ndarray, axis: int) -> tuple[int, float]:
    """Width and centre of the bright bar across ``axis`` (1: columns, 0: rows) of a frame."""
    profile = frame[..., 1].astype(np.float64).mean(axis=1 - axis)
    bright = np.flatnonzero(profile > 128)
    return len(bright), float(bright.mean())


@pytest.mark.parametrize(
    ("size", "sar", "box", "axis", "bar", "squashed"),
    [
        # odd landscape, vertical bar: squash scales it by 256 / width, shorter_side by 256 / height
        ("161x97", 1, "x=70:y=0:w=21:h=97", 1, 21 * 256 / 97, 21 * 256 / 161),
        ("180x320", 1, "x=0:y=150:w=180:h=20", 0, 20 * 256 / 180, 20 * 256 / 320),  # portrait, horizontal
        # anamorphic, displayed 192x96: shorter_side by 256 / 96 displayed, squash by 256 / 96 stored
        ("96x96", 2, "x=43:y=0:w=10:h=96", 1, 2 * 10 * 256 / 96, 10 * 256 / 96),
    ],
    ids=["landscape", "portrait", "anamorphic"],
)
@pytest.mark.parametrize("geometry", ["shorter_side", "squash"])
def test_resize_and_centre_crop(
    tmp_path: Path, size: str, sar: int, box: str, axis: int, bar: float, squashed: float, geometry: str
) -> None:
    src = f"color=c=black:s={size}:r=5:d=1,drawbox={box}:color=white:t=fill,setsar={sar}"
    ffmpeg("-f", "lavfi", "-i", src, "-c:v", "ffv1", tmp_path / "g.mkv")
    frame = demux(tmp_path / "g.mkv", DemuxParams(resize=256, crop=224, geometry=geometry)).frames[0]
    assert frame.shape == (224, 224, 3)
    width, centre = _bar(frame, axis)
    # shorter_side: the bar scaled by resize / shorter displayed side (aspect kept); squash: by resize /
    # the side it lies across (each side to resize independently)
    assert abs(width - (bar if geometry == "shorter_side" else squashed)) <= 2
    assert abs(centre - 111.5) <= 1  # and still in the middle: centre crop


def _edge_colours(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean RGB of the two outermost columns on each side (rows away from the top and bottom)."""
    rows = slice(frame.shape[0] // 4, 3 * frame.shape[0] // 4)
    return frame[rows, :2].reshape(-1, 3).mean(0), frame[rows, -2:].reshape(-1, 3).mean(0)


@pytest.mark.parametrize(
    ("size", "sar"),
    [("320x180", "1"), ("180x180", "16/9")],  # 16:9 square pixels; anamorphic 16:9 from square storage
    ids=["16:9", "anamorphic_16:9"],
)
def test_squash_keeps_the_frame_edges_shorter_side_crops_them(tmp_path: Path, size: str, sar: str) -> None:
    """A 16:9 frame with a red band on the left eighth and a blue one on the right eighth, grey between.

    ``squash`` (the paper's 256² then 224² centre crop) keeps 87.5 % of the width, so both bands reach
    the crop's edges; ``shorter_side`` keeps 49 % of it and both are cut away. Frame counts and the exact
    square shape are the same for both.
    """
    w = int(size.split("x")[0])
    band = w // 8
    src = (
        f"color=c=gray:s={size}:r=10:d=2.3,"
        f"drawbox=x=0:y=0:w={band}:h=ih:color=red:t=fill,"
        f"drawbox=x={w - band}:y=0:w={band}:h=ih:color=blue:t=fill,setsar={sar}"
    )
    ffmpeg("-f", "lavfi", "-i", src, "-c:v", "ffv1", "-pix_fmt", "yuv444p", tmp_path / "e.mkv")
    out = {
        g: demux(tmp_path / "e.mkv", DemuxParams(resize=256, crop=224, sample_rates=(), geometry=g)).frames
        for g in ("squash", "shorter_side")
    }
    red, blue, grey = np.array([255, 0, 0]), np.array([0, 0, 255]), np.array([128, 128, 128])
    for g, frames in out.items():
        assert frames.shape == (2, 224, 224, 3), g  # ceil(2.3 - 0.5) = 2 instants at 1 fps
        left, right = _edge_colours(frames[0])
        if g == "squash":
            assert np.abs(left - red).max() < 40 and np.abs(right - blue).max() < 40, (left, right)
        else:
            assert np.abs(left - grey).max() < 40 and np.abs(right - grey).max() < 40, (left, right)
        centre = frames[0, 100:124, 100:124].reshape(-1, 3).mean(0)
        assert np.abs(centre - grey).max() < 40  # the middle is the grey field in both


def test_geometry_is_validated_and_keyword_only() -> None:
    assert DemuxParams().geometry == "squash"  # the paper's geometry by default
    with pytest.raises(ValueError, match="geometry"):
        DemuxParams(geometry="letterbox")  # type: ignore[arg-type]
    # keyword-only: the positional (fps, resize, crop, sample_rates, max_duration_s) form keeps its meaning
    assert DemuxParams(1.0, 256, 224, (8000,), 60.0).max_duration_s == 60.0


def test_video_without_audio(timing_dir: Path) -> None:
    d = demux(timing_dir / "t25.mkv")
    assert d.audio == {} and d.frames.shape == (7, 224, 224, 3) and not d.info.has_audio


def test_params_validation() -> None:
    with pytest.raises(ValueError):
        DemuxParams(resize=200, crop=224)
    with pytest.raises(ValueError):
        DemuxParams(fps=0)
    assert DemuxParams(resize=342, crop=299).crop == 299


def _half_white(path: Path, rotation: int) -> None:
    """A 1-s 64x36 video, top half white, bottom half black, stored with a display ``rotation`` (the
    matrix phones write for portrait video; ffmpeg 5.1 cannot write one, PyAV's encoder can)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 36, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        picture = np.zeros((36, 64, 3), np.uint8)
        picture[:18] = 255
        for _ in range(5):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(stream.encode())


@pytest.mark.parametrize("rotation", [0, 90, -90])
def test_rotation_is_read_and_frames_are_upright(tmp_path: Path, rotation: int) -> None:
    """The probe reports displayed sides; demux shows what a player shows (ffmpeg auto-rotates): the
    white half moves from the top to a side when the stream says ±90°."""
    _half_white(tmp_path / "r.mp4", rotation)
    info = probe(tmp_path / "r.mp4")
    assert (info.width, info.height) == ((64, 36) if rotation == 0 else (36, 64))
    frame = demux(tmp_path / "r.mp4", DemuxParams(resize=32, crop=32, geometry="shorter_side")).frames[0]
    grey = frame[..., 1].astype(np.float64)
    top_bottom = grey[:8].mean() - grey[-8:].mean()
    left_right = grey[:, :8].mean() - grey[:, -8:].mean()
    if rotation == 0:
        assert top_bottom > 200 and abs(left_right) < 30
    else:
        assert abs(left_right) > 200 and abs(top_bottom) < 30


# --------------------------------------------------------------------------------------------------------
# Broken inputs and awkward names
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mp4s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mp4")
    for name, flags in (("plain.mp4", []), ("faststart.mp4", ["-movflags", "+faststart"])):
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=4", "-f", "lavfi", "-i", "sine=d=4",
               "-c:v", "libx264", "-c:a", "aac", *flags, root / name)  # fmt: skip
    return root


def _broken(kind: str, mp4s: Path, tmp: Path) -> Path:
    path = tmp / f"{kind}.mp4"
    if kind == "missing":
        return path
    if kind == "empty":
        path.touch()
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("not a video\n" * 100)
    elif kind == "directory":
        path.mkdir()
    elif kind == "image":
        path = tmp / "still.png"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48", "-frames:v", "1", path)
    else:  # truncated_plain (moov at the end: gone) / truncated_faststart (moov kept, media data cut)
        data = (mp4s / ("plain.mp4" if kind == "truncated_plain" else "faststart.mp4")).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("missing", "not found"), ("empty", "empty"), ("random", "Invalid data"), ("text", "Invalid data"),
     ("directory", "not a regular file"), ("image", "unsupported file type '.png'"),
     ("truncated_plain", "moov atom not found"), ("truncated_faststart", "truncated")],
)  # fmt: skip
def test_broken_inputs_raise_media_error(
    mp4s: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, reason: str
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = _broken(kind, mp4s, tmp_path)
    with pytest.raises(MediaError) as excinfo:
        demux(path)
    assert reason in excinfo.value.reason
    assert str(excinfo.value) == f"{path.name}: {excinfo.value.reason}"
    if kind != "truncated_faststart":
        with pytest.raises(MediaError):
            probe(path)
    assert not list(scratch.iterdir())  # the private audio directory is gone


def test_media_error_id_can_be_overwritten_and_pickled() -> None:
    import pickle

    err = MediaError("boom", "x.mp4")
    err.video_id = "yt:abc"
    assert str(err) == "yt:abc: boom"
    again = pickle.loads(pickle.dumps(err))
    assert (again.reason, again.video_id) == ("boom", "yt:abc")


def test_weird_file_names(mp4s: Path, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    for name in ["with space 'quote' \"dq\" $(touch pwned) `touch pwned`; ü名 é.mp4", "-starts-with-dash.mp4",
                 "http:colon|pipe.mp4", "100%d.mp4"]:  # fmt: skip
        path = tmp_path / name
        shutil.copy(mp4s / "plain.mp4", path)
        d = demux(path, DemuxParams(resize=64, crop=64, sample_rates=(8000,)))
        assert d.frames.shape == (4, 64, 64, 3) and abs(len(d.audio[8000]) - 32000) < 400
    assert not canary.exists() and not Path("pwned").exists()


# --------------------------------------------------------------------------------------------------------
# fetch
# --------------------------------------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _store_objects(raw_root: Path) -> list[Path]:
    return [p for p in raw_root.glob("??/*") if p.is_file()]


#: The test servers listen on loopback, which fetch refuses by default: allowed as an intranet mirror is.
LOOPBACK = FetchPolicy(allow_networks=("127.0.0.0/8",))


def test_fetch_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    media, raw = tmp_path / "media", tmp_path / "raw"
    (media / "sub dir").mkdir(parents=True)
    src = media / "sub dir" / "Clip.MP4"
    src.write_bytes(b"video bytes v1")
    digest = _sha(b"video bytes v1")
    out = fetch("sub dir/Clip.MP4", raw, media_root=media)
    assert out == raw / digest[:2] / f"{digest}.mp4" and out.read_bytes() == b"video bytes v1"
    anywhere = FetchPolicy(allow_absolute_paths=True)
    assert fetch(str(src), raw, policy=anywhere) == out  # the absolute spelling is the same source
    entry = json.loads(next((raw / "index").glob("*.json")).read_text())
    assert entry["digest"] == digest and entry["size"] == 14 and entry["mtime_ns"] == src.stat().st_mtime_ns
    assert entry["key"] == source_key(str(src))

    def no_rehash(*args, **kwargs):
        raise AssertionError("unchanged local file was hashed again")

    monkeypatch.setattr(fetch_mod, "_copy_hashing", no_rehash)
    assert fetch("sub dir/Clip.MP4", raw, media_root=media) == out
    monkeypatch.undo()

    src.write_bytes(b"video bytes v2, longer")  # changed size and mtime: fetched again
    out2 = fetch("sub dir/Clip.MP4", raw, media_root=media)
    assert out2.read_bytes() == b"video bytes v2, longer" and out2 != out and out.exists()
    src.write_bytes(b"video bytes v3, longe!")  # same size, new mtime
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert fetch("sub dir/Clip.MP4", raw, media_root=media).read_bytes() == b"video bytes v3, longe!"
    assert not list((raw / ".tmp").iterdir())

    with pytest.raises(MediaError, match="file not found"):
        fetch("nope.mp4", raw, media_root=media)


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b"\x00\x01fake mp4 payload" * 5000
    requests: Counter[str] = Counter()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, body: bytes, ctype: str = "video/mp4") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        n = self.requests[self.path] = self.requests[self.path] + 1
        if self.path == "/video.mp4":
            self._send(self.body)
        elif self.path == "/watch?v=1":
            self._send(self.body[::-1], "video/webm")
        elif self.path == "/flaky.mp4" and n <= 2:
            self.send_error(503, "busy")
        elif self.path == "/flaky.mp4":
            self._send(self.body)
        elif self.path == "/drop.mp4":  # promise the whole body, send half, hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body[: len(self.body) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/to-ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/x.mp4")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.requests = Counter()
    with loopback_server(_Handler) as url:
        yield url


def test_fetch_http_is_content_addressed_and_idempotent(server: str, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    out = fetch(f"{server}/video.mp4", raw, policy=LOOPBACK)
    digest = _sha(_Handler.body)
    assert out == raw / digest[:2] / f"{digest}.mp4" and out.read_bytes() == _Handler.body
    assert out.stat().st_mode & 0o777 == 0o644
    assert fetch(f"{server}/video.mp4", raw, policy=LOOPBACK) == out
    assert _Handler.requests["/video.mp4"] == 1  # second call served from the index
    # no extension in the URL: taken from Content-Type
    assert fetch(f"{server}/watch?v=1", raw, policy=LOOPBACK).suffix == ".webm"


def test_fetch_http_retries_5xx_with_backoff(server: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    out = fetch(f"{server}/flaky.mp4", tmp_path / "raw", retries=3, backoff=0.05, policy=LOOPBACK)
    assert out.read_bytes() == _Handler.body and _Handler.requests["/flaky.mp4"] == 3
    assert time.monotonic() - t0 >= 0.05 + 0.1  # slept 0.05 then 0.1
    _Handler.requests.clear()
    with pytest.raises(MediaError, match="503"):
        fetch(f"{server}/flaky.mp4", tmp_path / "raw2", retries=1, backoff=0.01, policy=LOOPBACK)
    assert _Handler.requests["/flaky.mp4"] == 2


def test_fetch_http_errors_are_not_retried_or_stored(server: str, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    with pytest.raises(MediaError, match="404"):
        fetch(f"{server}/missing.mp4", raw, backoff=0.01, policy=LOOPBACK)
    assert _Handler.requests["/missing.mp4"] == 1
    with pytest.raises(MediaError, match="redirect"):
        fetch(f"{server}/to-ftp", raw, backoff=0.01, policy=LOOPBACK)
    with pytest.raises(MediaError, match="giving up"):
        fetch("http://127.0.0.1:9/x.mp4", raw, retries=1, backoff=0.01, timeout=2, policy=LOOPBACK)  # refused
    assert _store_objects(raw) == []


def test_dropped_connection_leaves_nothing_in_the_store(server: str, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    with pytest.raises(MediaError, match="truncated") as excinfo:
        fetch(f"{server}/drop.mp4", raw, retries=2, backoff=0.01, policy=LOOPBACK)
    assert excinfo.value.video_id == f"{server}/drop.mp4"
    assert _Handler.requests["/drop.mp4"] == 3
    assert _store_objects(raw) == [] and not list((raw / ".tmp").iterdir())
    assert not (raw / "index").exists() or not list((raw / "index").iterdir())


@pytest.mark.parametrize(
    "source", ["ftp://example.com/a.mp4", "file:///etc/passwd", "s3://bucket/key.mp4", "yt:not-an-id",
               "youtube:", "   "],
)  # fmt: skip
def test_refused_sources(tmp_path: Path, source: str) -> None:
    with pytest.raises(MediaError):
        fetch(source, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_youtube_fails_fast_and_clearly_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Route yt-dlp through a proxy that refuses connections, so the test is offline whatever the machine.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    t0 = time.monotonic()
    with pytest.raises(MediaError, match="yt-dlp failed") as excinfo:
        fetch("youtube:dQw4w9WgXcQ", tmp_path / "raw", retries=0, timeout=5)
    assert time.monotonic() - t0 < 20
    assert excinfo.value.video_id == "youtube:dQw4w9WgXcQ"
    assert _store_objects(tmp_path / "raw") == []
    assert source_key("youtube:dQw4w9WgXcQ") == source_key("yt:dQw4w9WgXcQ") == "yt:dQw4w9WgXcQ"


def test_split_versions_change_with_rows_and_local_files_only(tmp_path: Path) -> None:
    """The observed version of a split: same rows and files in any order → same version; a row or a local
    file replaced in place (the raw index re-fetches it) → a new version for that split only."""
    import pandas as pd

    from instrec_pipeline.media.partition import split_versions

    (tmp_path / "a.mp4").write_bytes(b"a" * 10)
    (tmp_path / "b.mp4").write_bytes(b"b" * 10)
    table = pd.DataFrame({"video_id": ["a", "b", "y"], "source": ["a.mp4", "b.mp4", "yt:dQw4w9WgXcQ"],
                          "label": ["flute", "guitar", "flute"],
                          "split": ["train", "val", "train"]})  # fmt: skip
    first = split_versions(table, tmp_path)
    assert set(first) == {"train", "val"}
    assert split_versions(table.iloc[::-1], tmp_path) == first
    relabelled = table.assign(label=["guitar", "guitar", "flute"])
    other = split_versions(relabelled, tmp_path)
    assert other["val"] == first["val"] and other["train"] != first["train"]
    os.utime(tmp_path / "b.mp4", ns=(1, 1))  # same size, new mtime: replaced in place
    touched = split_versions(table, tmp_path)
    assert touched["val"] != first["val"] and touched["train"] == first["train"]
    (tmp_path / "b.mp4").unlink()
    assert split_versions(table, tmp_path)["val"] not in (first["val"], touched["val"])


# --------------------------------------------------------------------------------------------------------
# The optional torchcodec frames decoder: the same frames as ffmpeg's (another scaler: a few levels apart)
# --------------------------------------------------------------------------------------------------------

needs_torchcodec = pytest.mark.skipif(not torchcodec_frames.available(), reason="torchcodec not installed")


def _both(path: Path, params: DemuxParams) -> tuple[Demuxed, Demuxed]:
    return demux(path, params), demux(path, replace(params, decoder="torchcodec"))


def _mean_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@needs_torchcodec
@pytest.mark.parametrize("geometry", ["squash", "shorter_side"])
@pytest.mark.parametrize("case", list(TIMING_CASES))
def test_torchcodec_shows_the_frames_ffmpeg_shows(timing_dir: Path, case: str, geometry: str) -> None:
    """Same instants, same picks (constant and variable frame rates, a gap), values a few levels apart."""
    ff, tc = _both(timing_dir / TIMING_CASES[case][0], DemuxParams(resize=48, crop=48, sample_rates=(),
                                                                   geometry=geometry))  # fmt: skip
    assert tc.frames.shape == ff.frames.shape and tc.frames.dtype == np.uint8
    assert read_labels(tc.frames) == read_labels(ff.frames)
    assert _mean_gap(tc.frames, ff.frames) < 3


@needs_torchcodec
def test_torchcodec_ends_as_ffmpeg_does(tmp_path: Path) -> None:
    """Past the video stream's end the last frame repeats; the audio is ffmpeg's, sample for sample."""
    ffmpeg("-f", "lavfi", "-i", f"nullsrc=s=64x48:r=10:d=2,{LABEL}", "-f", "lavfi", "-i", "sine=d=4",
           "-c:v", "libx264", "-c:a", "flac", tmp_path / "a.mkv")  # fmt: skip
    ff, tc = _both(tmp_path / "a.mkv", DemuxParams(resize=48, crop=48, sample_rates=(8000, 12000)))
    assert read_labels(tc.frames) == [5, 15, 19, 19]
    for rate in (8000, 12000):
        np.testing.assert_array_equal(tc.audio[rate], ff.audio[rate])
    ffmpeg("-f", "lavfi", "-i", f"nullsrc=s=64x48:r=25:d=0.3,{LABEL}", "-c:v", "libx264", tmp_path / "s.mp4")
    assert read_labels(_both(tmp_path / "s.mp4", DemuxParams(resize=48, crop=48))[1].frames) == [7]


@needs_torchcodec
@pytest.mark.parametrize(("size", "sar"), [("320x180", "1"), ("180x180", "16/9")], ids=["16:9", "anamorphic"])
def test_torchcodec_geometry_follows_the_displayed_picture(tmp_path: Path, size: str, sar: str) -> None:
    w = int(size.split("x")[0])
    src = (f"testsrc2=s={size}:r=10:d=2.3,drawbox=x=0:y=0:w={w // 8}:h=ih:color=red:t=fill,"
           f"drawbox=x={w - w // 8}:y=0:w={w // 8}:h=ih:color=blue:t=fill,setsar={sar}")  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", src, "-c:v", "ffv1", "-pix_fmt", "yuv444p", tmp_path / "e.mkv")
    for geometry in ("squash", "shorter_side"):
        ff, tc = _both(tmp_path / "e.mkv", DemuxParams(sample_rates=(), geometry=geometry))
        assert tc.frames.shape == ff.frames.shape == (2, 224, 224, 3)
        assert _mean_gap(tc.frames, ff.frames) < 4, geometry


@needs_torchcodec
@pytest.mark.parametrize("rotation", [90, -90])
def test_torchcodec_leaves_rotated_streams_to_ffmpeg(tmp_path: Path, rotation: int) -> None:
    _half_white(tmp_path / "r.mp4", rotation)
    ff, tc = _both(tmp_path / "r.mp4", DemuxParams(resize=32, crop=32, geometry="shorter_side"))
    np.testing.assert_array_equal(tc.frames, ff.frames)  # upright, decoded by ffmpeg


@needs_torchcodec
def test_a_video_left_to_ffmpeg_keeps_its_audio(
    mp4s: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback decodes the whole video, sound included (spooled too, as the pipeline stores it)."""

    def unsupported(*_: object, **__: object) -> Iterator[np.ndarray]:
        raise torchcodec_frames.Unsupported("as a rotated stream would be")
        yield  # a generator, like the real one

    monkeypatch.setattr(torchcodec_frames, "decode_frames", unsupported)
    params = DemuxParams(resize=48, crop=48, sample_rates=(12000,))
    ff, tc = _both(mp4s / "plain.mp4", params)
    np.testing.assert_array_equal(tc.frames, ff.frames)
    np.testing.assert_array_equal(tc.audio[12000], ff.audio[12000])
    spooled = demux_to_spool(mp4s / "plain.mp4", replace(params, decoder="torchcodec"), tmp_path)
    assert set(spooled.audio_files) == {12000}


@needs_torchcodec
@pytest.mark.parametrize("kind", ["empty", "random", "text", "truncated_plain", "truncated_faststart"])
def test_torchcodec_broken_inputs_raise_media_error(mp4s: Path, tmp_path: Path, kind: str) -> None:
    with pytest.raises(MediaError):
        demux(_broken(kind, mp4s, tmp_path), DemuxParams(decoder="torchcodec"))


def test_the_frames_decoder_is_recorded_with_the_frames(tmp_path: Path) -> None:
    """ffmpeg's stores keep their digest; torchcodec's frames (per device) are other parameters."""
    import zarr

    from instrec_pipeline.store import FrameCodec, Frames

    labels = {d: DemuxParams(decoder=d, decode_device="cuda:1").frames_decoder
              for d in ("ffmpeg", "torchcodec")}  # fmt: skip
    assert labels == {"ffmpeg": "ffmpeg", "torchcodec": "torchcodec/cuda"}
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    digests = [Frames.open(group, 1.0, 256, 224, FrameCodec(), decoder=d).array.params_digest
               for d in ("ffmpeg", "torchcodec/cpu", "torchcodec/cuda")]  # fmt: skip
    assert len(set(digests)) == 3
    assert "decoder" not in Frames.open(group, 1.0, 256, 224, FrameCodec()).array.params
    with pytest.raises(ValueError, match="decoder"):
        DemuxParams(decoder="nvdec")  # type: ignore[arg-type]
