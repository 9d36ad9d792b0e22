"""Probe a media file, in-process, into a small, typed summary.

Demux needs to know, before it builds its ffmpeg graph, which streams exist (a graph naming a missing audio
stream fails), how many audio channels to average, and the duration that fixes the frame count. Probing
first also turns most broken inputs (missing, empty, random bytes, moov-less truncated mp4, still images)
into a clear :class:`MediaError` before any decoding work.

**In-process, with PyAV.** A separate ffprobe per video cost 70–150 ms (mostly starting the process and
linking FFmpeg's libraries), a tenth of a short video's demux; opening the file with PyAV's libavformat
costs ~5 ms and reads the same container fields. The one decoding process per video stays the system
ffmpeg (:mod:`~instrec_pipeline.media.demux`). Both apply the whitelists below, so the in-process open
refuses what ffmpeg would. Trade-off: a libavformat crash on a hostile file now takes down the worker
process instead of one ffprobe — libavformat only parses headers here, with one decoder thread.

**ffmpeg reads only the file we name.** A file's bytes are not to be trusted: an HLS playlist (or a concat
script, an SDP description, …), whatever its name, makes ffmpeg open the other files or URLs it lists, so a
downloaded "video" could make us store frames of any file on this machine. Every open of an input (here
and in ffmpeg) therefore gets :func:`input_options`: the ``file`` protocol only, and only the demuxers of
the containers we support; files named as something else are refused before anything opens them.

**Bounded inputs.** A few KB can claim any duration (one timestamp), and the duration fixes the frame
count, so ``max_duration_s`` refuses long claims here, before anything is decoded.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import av.logging
from av.container import InputContainer
from av.stream import Disposition

from instrec_pipeline.media.errors import MediaError

__all__ = [
    "MediaError",
    "MediaInfo",
    "probe",
    "ffmpeg_path",
    "last_line",
    "input_options",
    "FORMAT_WHITELIST",
    "MEDIA_EXTENSIONS",
]

# ffmpeg's demuxer names (``ffmpeg -demuxers``); a demuxer is allowed when one of its comma-separated names
# is listed. Left out on purpose, among others: hls, concat, webm_dash_manifest, sdp/rtsp, image2: they
# name other inputs instead of being one.
FORMAT_WHITELIST = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,ogg,wav,mp3,aac,flac"
PROTOCOL_WHITELIST = "file"  # also binds what a demuxer opens itself (ffmpeg's default adds crypto, data)
# Names of those containers. No extension, or the raw store's ``.bin`` (a download without a usable name or
# Content-Type), is left to the format whitelist; any other name (.m3u8, .txt, .ffconcat, .sdp, …) is refused.
MEDIA_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".m4a", ".mov", ".qt", ".3gp", ".3g2", ".mj2", ".mkv", ".mka", ".webm", ".avi", ".flv",
     ".ts", ".m2ts", ".mts", ".ogg", ".ogv", ".oga", ".opus", ".wav", ".mp3", ".aac", ".flac"}
)  # fmt: skip
_UNNAMED = frozenset({"", ".bin"})
_REFUSED = "(playlists and other indirections are refused)"
# What libavformat logs when it refuses a demuxer: the context (the demuxer's name) comes with the message.
_NOT_ON_WHITELIST = "Format not on whitelist"
# FFmpeg ≥ 7.1 no longer even detects a playlist stored under another name as HLS (and says so): the same
# refusal, named as older ffmpeg names it.
_HLS_UNDETECTED = "Not detecting m3u8/hls"
#: Video packets read, at most, to decode the first frame (its display matrix: rotation).
_FIRST_FRAME_PACKETS = 64
# FFmpeg's log goes to Python only while this is held (the error path): PyAV's log callback takes the GIL
# for every message, which is best kept away from concurrent decoding.
_LOG_LOCK = threading.Lock()


@dataclass(frozen=True)
class MediaInfo:
    """What the pipeline needs to know about a file.

    ``duration`` is the container's duration in seconds (the longest stream), the quantity that fixes the
    number of frames demux returns. ``width``/``height`` are as displayed: swapped when the stream carries a
    ±90° rotation (phones record portrait this way), since ffmpeg auto-rotates when decoding.
    Cover art (``attached_pic``) in audio files does not count as video.
    """

    duration: float
    has_video: bool
    has_audio: bool
    width: int | None
    height: int | None
    sample_rate: int | None
    channels: int | None
    video_codec: str | None
    audio_codec: str | None


@dataclass(frozen=True)
class _Probed:
    info: MediaInfo
    video_index: int | None  # absolute stream index, so ffmpeg picks the same stream we described
    audio_index: int | None
    sar: float = 1.0  # the sample (pixel) aspect ratio as ffmpeg reads it: the stream's, else the codec's


def ffmpeg_path(path: Path) -> str:
    """Name ``path`` for ffmpeg/libavformat unambiguously.

    The ``file:`` protocol prefix on an absolute path stops ffmpeg reading names such as ``-x.mp4`` as
    options or ``http:x.mp4``/``a|b.mp4`` as other protocols; no shell is ever involved.
    """
    return "file:" + str(Path(path).absolute())


def input_options() -> dict[str, str]:
    """Input options for every open of a media file (PyAV here, ffmpeg in demux): see the module docstring."""
    return {"protocol_whitelist": PROTOCOL_WHITELIST, "format_whitelist": FORMAT_WHITELIST}


def _seconds(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


def last_line(stderr: bytes | str | list[str] | None, n: int = 1) -> str:
    """The last ``n`` non-empty lines of ffmpeg's stderr (bytes, text or lines), joined by `` | ``: the
    actual error is at the end (its cause, e.g. "moov atom not found", is often one line above)."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", errors="replace")
    if isinstance(stderr, list):
        stderr = "\n".join(stderr)
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "no message"


def _open(path: Path) -> InputContainer:
    return av.open(ffmpeg_path(path), options=input_options())


def _logged_open(path: Path) -> list[tuple[str, str]]:
    """``(context, message)`` pairs FFmpeg logs when opening ``path``: the cause of a failed open.

    Only called after an open failed (PyAV keeps FFmpeg's log off otherwise), so the happy path never
    enables logging; the lock keeps two failing opens from switching it under each other.
    """
    with _LOG_LOCK:
        level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
        av.logging.set_level(av.logging.ERROR)
        av.logging.set_skip_repeated(False)  # the same cause twice in a row is still this file's cause
        try:
            with av.logging.Capture(local=True) as logs, contextlib.suppress(av.FFmpegError, OSError):
                _open(path).close()
        finally:
            av.logging.set_level(level)
            av.logging.set_skip_repeated(skip)
    return [(name or "", message.strip()) for _, name, message in logs if message.strip()]


def _open_error(path: Path, exc: Exception) -> MediaError:
    """A failed open as the reason a person can act on: a refused container by name, else FFmpeg's cause."""
    logs = _logged_open(path)
    for context, message in logs:
        if message.startswith(_NOT_ON_WHITELIST):
            return MediaError(f"unsupported container '{context}' {_REFUSED}", path.name)
        if message.startswith(_HLS_UNDETECTED):
            return MediaError(f"unsupported container 'hls' {_REFUSED}", path.name)
    what = getattr(exc, "strerror", None) or str(exc)
    cause = " | ".join(message for _, message in logs[-2:])
    return MediaError(f"cannot open: {what}" + (f" ({cause})" if cause else ""), path.name)


def _rotation(container: InputContainer, stream: av.video.stream.VideoStream) -> int:
    """Rotation in degrees of ``stream``, from its first frame's display matrix (FFmpeg ≥ 7 carries the
    stream's matrix onto every frame; PyAV shows it on frames only). One decoder thread, a bounded number
    of packets; 0 when nothing decodes (demux then says why)."""
    stream.codec_context.thread_count = 1
    try:
        for i, packet in enumerate(container.demux(stream)):
            for frame in stream.codec_context.decode(packet):
                return int(frame.rotation or 0)
            if i >= _FIRST_FRAME_PACKETS:
                break
    except (av.FFmpegError, ValueError):
        pass
    return 0


def _duration(container: InputContainer, *streams: av.stream.Stream | None) -> float | None:
    """The container's duration (longest stream), else the longest of the given streams'."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    durations = [
        float(s.duration * s.time_base) for s in streams if s is not None and s.duration and s.time_base
    ]
    return max(durations, default=None)


def _probe(path: Path, max_duration_s: float | None = None) -> _Probed:
    path = Path(path)
    name = path.name
    if not path.exists():
        raise MediaError("file not found", name)
    if not path.is_file():
        raise MediaError("not a regular file", name)
    suffix = path.suffix.lower()
    if suffix not in MEDIA_EXTENSIONS and suffix not in _UNNAMED:
        raise MediaError(f"unsupported file type '{suffix}' {_REFUSED}", name)
    if path.stat().st_size == 0:
        raise MediaError("empty file", name)
    try:
        container = _open(path)
    except (av.FFmpegError, OSError) as exc:
        raise _open_error(path, exc) from exc
    with container:
        video = next(
            (
                s
                for s in container.streams.video
                if not s.disposition & Disposition.attached_pic and s.codec_context.width
            ),
            None,
        )
        audio = next((s for s in container.streams.audio if s.codec_context.channels), None)
        fmt = container.format.name
        if video is None and audio is None:
            raise MediaError(f"no audio or video stream (format {fmt})", name)
        duration = _duration(container, video, audio)
        if duration is None:
            raise MediaError(f"unknown duration (still image? format {fmt})", name)
        if duration <= 0:
            raise MediaError(f"zero duration ({duration})", name)
        if max_duration_s is not None and duration > max_duration_s:
            raise MediaError(
                f"duration {_seconds(duration)} s exceeds max_duration_s {_seconds(max_duration_s)} s", name
            )
        width = height = None
        if video is not None:
            width, height = video.codec_context.width, video.codec_context.height
            if _rotation(container, video) % 180 == 90:
                width, height = height, width
        info = MediaInfo(
            duration=duration,
            has_video=video is not None,
            has_audio=audio is not None,
            width=width,
            height=height,
            sample_rate=audio.codec_context.sample_rate if audio else None,
            channels=audio.codec_context.channels if audio else None,
            video_codec=video.codec_context.name if video else None,
            audio_codec=audio.codec_context.name if audio else None,
        )
        sar = (video.sample_aspect_ratio or video.codec_context.sample_aspect_ratio) if video else None
        return _Probed(info, video.index if video else None, audio.index if audio else None,
                       float(sar) if sar else 1.0)  # fmt: skip


def probe(path: Path, max_duration_s: float | None = None) -> MediaInfo:
    """Describe ``path``; raise :class:`MediaError` for missing, empty, corrupt, non-media or zero-length
    files, playlists and other containers off :data:`FORMAT_WHITELIST`, and (when given) durations over
    ``max_duration_s``, so a bad download is reported once, here, rather than as an obscure decode failure
    (or hours of decoding) later."""
    return _probe(path, max_duration_s).info
