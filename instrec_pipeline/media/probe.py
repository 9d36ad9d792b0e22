"""ffprobe a media file into a small, typed summary.

Demux needs to know, before it builds its ffmpeg graph, which streams exist (a graph naming a missing audio
stream fails), how many audio channels to average, and the duration that fixes the frame count. Probing
first also turns most broken inputs (missing, empty, random bytes, moov-less truncated mp4, still images)
into a clear :class:`MediaError` before any decoding work.

**ffmpeg reads only the file we name.** A file's bytes are not to be trusted: an HLS playlist (or a concat
script, an SDP description, …), whatever its name, makes ffmpeg open the other files or URLs it lists, so a
downloaded "video" could make us store frames of any file on this machine. Every ffprobe/ffmpeg run over an
input therefore gets :func:`input_options`: the ``file`` protocol only, and only the demuxers of the
containers we support; files named as something else are refused before ffprobe even runs.

**Bounded inputs.** A few KB can claim any duration (one timestamp), and the duration fixes the frame
count, so ``max_duration_s`` refuses long claims here, before anything is decoded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg

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
_NOT_ON_WHITELIST = re.compile(r"\[(\S+) @ 0x[0-9a-fA-F]+\] Format not on whitelist")


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


def ffmpeg_path(path: Path) -> str:
    """Name ``path`` for ffmpeg/ffprobe unambiguously.

    The ``file:`` protocol prefix on an absolute path stops ffmpeg reading names such as ``-x.mp4`` as
    options or ``http:x.mp4``/``a|b.mp4`` as other protocols; no shell is ever involved.
    """
    return "file:" + str(Path(path).absolute())


def input_options() -> dict[str, str]:
    """Input options for every ffprobe/ffmpeg run over a media file: see the module docstring."""
    return {"protocol_whitelist": PROTOCOL_WHITELIST, "format_whitelist": FORMAT_WHITELIST}


def _seconds(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


def last_line(stderr: bytes | str | list[str] | None, n: int = 1) -> str:
    """The last ``n`` non-empty lines of ffmpeg's stderr (bytes, text or lines), joined by `` | ``: the
    actual error is at the end (ffprobe's cause, e.g. "moov atom not found", is one line above)."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", errors="replace")
    if isinstance(stderr, list):
        stderr = "\n".join(stderr)
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "no message"


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _rotation(stream: dict[str, Any]) -> int:
    """Rotation in degrees from the display matrix side data (ffprobe ≥ 5) or the legacy ``rotate`` tag."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return _int(side["rotation"]) or 0
    return _int((stream.get("tags") or {}).get("rotate")) or 0


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
        data = ffmpeg.probe(ffmpeg_path(path), v="error", **input_options())
    except ffmpeg.Error as exc:
        stderr = (exc.stderr or b"").decode("utf-8", errors="replace")
        refused = _NOT_ON_WHITELIST.search(stderr)
        if refused:
            raise MediaError(f"unsupported container '{refused.group(1)}' {_REFUSED}", name) from exc
        raise MediaError(f"ffprobe failed: {last_line(exc.stderr, 2)}", name) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MediaError(f"ffprobe output unreadable: {exc}", name) from exc
    except OSError as exc:  # ffprobe missing or not executable
        raise MediaError(f"cannot run ffprobe: {exc}", name) from exc

    streams: list[dict[str, Any]] = data.get("streams") or []
    fmt: dict[str, Any] = data.get("format") or {}
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video"
            and not (s.get("disposition") or {}).get("attached_pic")
            and _int(s.get("width"))
        ),
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio" and _int(s.get("channels"))), None)
    if video is None and audio is None:
        raise MediaError(f"no audio or video stream (format {fmt.get('format_name', '?')})", name)

    duration = _float(fmt.get("duration"))
    if duration is None:
        durations = [_float(s.get("duration")) for s in (video, audio) if s is not None]
        duration = max((d for d in durations if d is not None), default=None)
    if duration is None:
        raise MediaError(f"unknown duration (still image? format {fmt.get('format_name', '?')})", name)
    if duration <= 0:
        raise MediaError(f"zero duration ({duration})", name)
    if max_duration_s is not None and duration > max_duration_s:
        raise MediaError(
            f"duration {_seconds(duration)} s exceeds max_duration_s {_seconds(max_duration_s)} s", name
        )

    width = height = None
    if video is not None:
        width, height = _int(video.get("width")), _int(video.get("height"))
        if _rotation(video) % 180 == 90:
            width, height = height, width
    info = MediaInfo(
        duration=duration,
        has_video=video is not None,
        has_audio=audio is not None,
        width=width,
        height=height,
        sample_rate=_int(audio.get("sample_rate")) if audio else None,
        channels=_int(audio.get("channels")) if audio else None,
        video_codec=video.get("codec_name") if video else None,
        audio_codec=audio.get("codec_name") if audio else None,
    )
    return _Probed(
        info=info,
        video_index=_int(video.get("index")) if video else None,
        audio_index=_int(audio.get("index")) if audio else None,
    )


def probe(path: Path, max_duration_s: float | None = None) -> MediaInfo:
    """Describe ``path``; raise :class:`MediaError` for missing, empty, corrupt, non-media or zero-length
    files, playlists and other containers off :data:`FORMAT_WHITELIST`, and (when given) durations over
    ``max_duration_s``, so a bad download is reported once, here, rather than as an obscure decode failure
    (or hours of decoding) later."""
    return _probe(path, max_duration_s).info
