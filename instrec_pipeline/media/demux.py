"""Decode a video into frames sampled at fixed instants and mono audio at the model's sample rates.

One ffmpeg process per video does everything (decoding twice would double the dominant cost):

* frames: ``setpts → tpad → fps → scale → rgb24 → crop`` (the scale squashes or keeps the aspect ratio, see
  :class:`DemuxParams`), written to stdout as raw rgb24 and read in fixed-size chunks, so memory is
  bounded by the batch size whatever the video's length;
* audio: ``pan`` (average of all channels) ``→ asplit →`` one ``aresample`` (soxr) per rate, each written as
  f32le to a private temporary directory (audio is tiny next to frames), read back, then deleted.

**Frame instants.** Frame ``i`` is the picture on screen at ``t_i = (i + 0.5) / fps`` seconds after the
first video frame, i.e. the last frame whose timestamp is ``<= t_i`` (this is what a player shows, and it
is well defined for variable frame rates). Sampling mid-period rather than at ``i / fps`` avoids the first,
often black or blurred, frame and keeps every instant strictly inside the video. The instants are those
with ``t_i < duration``, so the count is ``expected_frame_count(duration, fps) = ceil(duration·fps − 0.5)``
(at least 1). It is implemented with ffmpeg's ``fps`` filter rounding *up* on timestamps shifted by
``−0.5/fps``: output ``n`` is then the last input frame with ``ceil(fps·t − 0.5) <= n``, i.e. ``t <= t_n``.
``tpad`` clones the last frame for one extra period so ffmpeg's end-of-stream rule never drops the final
instant (nor the only one, for a video shorter than half a period); surplus frames are discarded.
If the video stream ends before the container's duration (audio runs on), the remaining instants repeat
the last frame — again what a player shows — so the count is always the one above.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import IO, Literal, get_args

import ffmpeg
import numpy as np

from instrec_pipeline.media.errors import MediaError
from instrec_pipeline.media.probe import MediaInfo, _probe, _Probed, ffmpeg_path, input_options, last_line

__all__ = [
    "DemuxParams",
    "Demuxed",
    "GEOMETRIES",
    "Geometry",
    "Spooled",
    "demux",
    "demux_to_spool",
    "iter_frames",
    "expected_frame_count",
    "frame_instants",
]

log = logging.getLogger(__name__)

_GLOBAL_ARGS = ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y"]
# swscale: exact rounding and full-resolution chroma so colours survive the YUV → RGB conversion.
_SWS_FLAGS = "bicubic+accurate_rnd+full_chroma_int"
# Free space kept on the spool's disk besides the spool itself (or 5 % of it, if more): concurrent workers,
# the store writer and the system need room too, and estimates of compressed audio are not exact.
_DISK_MARGIN = 1 << 30


#: How a frame becomes a ``resize``×``resize`` picture before the centre crop (see :class:`DemuxParams`).
Geometry = Literal["squash", "shorter_side"]
GEOMETRIES: tuple[str, ...] = get_args(Geometry)


@dataclass(frozen=True)
class DemuxParams:
    """How to sample and shape a video.

    ``geometry`` says how the displayed picture (sample aspect ratio applied, so anamorphic sources are
    treated by what a player shows) is brought to ``resize`` before a centred ``crop``×``crop`` square is
    cut (paper: 256 → 224; Inception's native input: 342 → 299):

    * ``squash`` (default): both sides scaled to ``resize``, aspect ratio ignored — what the paper's
      authors did, so it is what reproduces their features. The crop keeps ``crop/resize`` of the width
      and height (87.5 % at 256 → 224), whatever the aspect ratio, at the cost of distorted shapes (a
      16:9 frame is squeezed horizontally by 1.78).
    * ``shorter_side``: the shorter displayed side scaled to ``resize``, aspect ratio kept; undistorted,
      but the square crop keeps only ``crop/resize · 9/16`` = 49 % of a 16:9 frame's width, so a player
      at the edge of a wide shot can be cut away.

    Both give exactly ``crop``×``crop`` frames. ``geometry`` is keyword-only so positional callers of the
    older ``(fps, resize, crop, sample_rates, max_duration_s)`` form keep their meaning.

    ``max_duration_s`` refuses longer files at probe time: a tiny file can claim hours (one timestamp), and
    frames, memory and spool grow with the duration. It bounds the work, not the result, so it is not part
    of what identifies stored features.

    ``threads``: ffmpeg's decoding and filter threads for this video (0: ffmpeg's default, one per core).
    When several videos are demuxed at once, one thread each decodes more per core than many
    (:func:`instrec_pipeline.parallel.demux_plan`, measured by ``make bench``). Like ``max_duration_s``
    it changes the speed, not the frames.

    ``decoder``: ``ffmpeg`` (default) or ``torchcodec`` for the frames
    (:mod:`~instrec_pipeline.media.torchcodec_frames`, NVDEC when ``decode_device`` is ``cuda``); the
    audio is always ffmpeg's. torchcodec's frames differ from ffmpeg's by a few levels (another scaler), so
    the decoder is recorded with the frames.
    """

    fps: float = 1.0
    resize: int = 256
    crop: int = 224
    sample_rates: tuple[int, ...] = (12000, 22050)
    max_duration_s: float = 7200.0
    geometry: Geometry = field(default="squash", kw_only=True)
    threads: int = field(default=0, kw_only=True)
    decoder: Literal["ffmpeg", "torchcodec"] = field(default="ffmpeg", kw_only=True)
    decode_device: str = field(default="cpu", kw_only=True)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop={self.crop}, resize={self.resize}")
        if any(int(r) != r or r <= 0 for r in self.sample_rates):
            raise ValueError(f"sample rates must be positive integers, got {self.sample_rates}")
        if not self.max_duration_s > 0:
            raise ValueError(f"max_duration_s must be positive, got {self.max_duration_s}")
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: ffmpeg's default), got {self.threads}")
        if self.decoder not in ("ffmpeg", "torchcodec"):
            raise ValueError(f"decoder must be ffmpeg or torchcodec, got {self.decoder!r}")

    @property
    def frames_decoder(self) -> str:
        """What decoded the frames, as recorded with them: ``ffmpeg``, ``torchcodec/cpu``, ``torchcodec/cuda``
        (NVDEC's colour conversion is not the CPU's, so the device counts too)."""
        if self.decoder == "ffmpeg":
            return "ffmpeg"
        return f"torchcodec/{self.decode_device.split(':')[0]}"


@dataclass
class Demuxed:
    """Everything downstream needs from one video.

    ``frames``: ``(n, crop, crop, 3)`` uint8 RGB, ``n == expected_frame_count(info.duration, fps)``
    (0 when there is no video stream). ``audio``: sample rate → float32 mono in [-1, 1] (empty without an
    audio stream). ``frame_times``: float64 seconds, see :func:`frame_instants`.
    """

    frames: np.ndarray
    audio: dict[int, np.ndarray]
    frame_times: np.ndarray
    info: MediaInfo


def expected_frame_count(duration: float, fps: float = 1.0) -> int:
    """Number of instants ``t_i = (i + 0.5) / fps`` (i = 0, 1, …) with ``t_i < duration``, but at least 1.

    That is ``max(1, ceil(duration·fps − 0.5))``: 3.0 s → 3, 7.4 s → 7, 7.6 s → 8, 0.3 s → 1 at 1 fps.
    A 1e-9 tolerance keeps float noise in a probed duration (7.5000000001) from adding an instant that
    sits exactly on the end. Non-positive durations give 0.
    """
    if not duration > 0:
        return 0
    return max(1, math.ceil(duration * fps - 0.5 - 1e-9))


def frame_instants(duration: float, fps: float = 1.0) -> np.ndarray:
    """The sampling instants in seconds, ``(i + 0.5) / fps``, clamped to ``duration`` (which only matters
    for the single frame of a video shorter than half a period: it is then the video's last frame)."""
    n = expected_frame_count(duration, fps)
    return np.minimum((np.arange(n, dtype=np.float64) + 0.5) / fps, duration)


def _rate(fps: float) -> Fraction:
    # ffmpeg takes frame rates as rationals; 30000/1001-style rates and 1/3 fps stay exact.
    return Fraction(fps).limit_denominator(1_000_000)


def _scaled_size(params: DemuxParams) -> tuple[str, str]:
    """The ``scale`` filter's width and height expressions for ``params.geometry``.

    ``squash`` maps the whole displayed picture onto ``resize``×``resize``: the stored pixel grid spans
    the displayed picture whatever its sample aspect ratio, so anamorphic sources need no special case
    (``setsar=1`` afterwards declares the square pixels). ``shorter_side`` uses the displayed width
    ``iw*sar``, so the shorter *displayed* side becomes exactly ``resize`` and the other is at least that.
    """
    r = params.resize
    if params.geometry == "squash":
        return str(r), str(r)
    portrait = "lt(iw*sar,ih)"
    return (
        f"if({portrait},{r},max({r},round({r}*iw*sar/ih)))",
        f"if({portrait},max({r},round({r}*ih/(iw*sar))),{r})",
    )


def _video_chain(stream: ffmpeg.nodes.FilterableStream, params: DemuxParams) -> ffmpeg.nodes.FilterableStream:
    rate = _rate(params.fps)
    half_period = f"{rate.denominator}/(2*{rate.numerator})"
    c = params.crop
    w, h = _scaled_size(params)
    return (
        stream.filter("setpts", f"PTS-STARTPTS-{half_period}/TB")
        .filter("tpad", stop_mode="clone", stop_duration=repr(float(1 / rate)))
        .filter("fps", fps=f"{rate.numerator}/{rate.denominator}", round="up")
        .filter("scale", w=w, h=h, flags=_SWS_FLAGS)
        .filter("format", "rgb24")  # convert in the scaler, then crop exactly in RGB
        .filter("crop", c, c)  # x, y default to the centre
        .filter("setsar", 1)
    )


def _mono(stream: ffmpeg.nodes.FilterableStream, channels: int) -> ffmpeg.nodes.FilterableStream:
    # `<` makes pan renormalise the gains to sum to 1: the plain average of all channels (stereo: (L+R)/2;
    # 5.1: all six, LFE included, equally). `-ac 1` would apply swresample's downmix matrix instead, which
    # weights centre/surround channels and drops LFE.
    terms = "+".join(f"c{i}" for i in range(max(1, channels)))
    return stream.filter("pan", f"mono|c0<{terms}")


def _drain_stderr(pipe: IO[bytes], sink: deque[str]) -> None:
    # A separate reader so a chatty ffmpeg can never block on a full stderr pipe while we read stdout.
    for raw in iter(pipe.readline, b""):
        line = raw.decode("utf-8", errors="replace").strip()
        if line:
            sink.append(line)


def _read_batches(pipe: IO[bytes], shape: tuple[int, int, int], batch: int) -> Iterator[np.ndarray]:
    """Fixed-size reads straight into numpy buffers: memory is one batch, whatever the video's length."""
    frame_bytes = math.prod(shape)
    while True:
        buf = np.empty((batch, *shape), dtype=np.uint8)
        view = memoryview(buf).cast("B")
        got = 0
        while got < len(view):
            n = pipe.readinto(view[got:])
            if not n:
                break
            got += n
        k = got // frame_bytes
        if k:
            yield buf[:k] if k == batch else buf[:k].copy()
        if got < len(view):
            return


def read_f32(path: Path, start: int = 0, count: int = -1) -> np.ndarray:
    """Samples of a raw f32le file, clipped to [-1, 1] (soxr's band-limiting can overshoot full scale)."""
    samples = np.fromfile(path, dtype="<f4", offset=4 * start, count=count).astype(np.float32, copy=False)
    return np.clip(samples, -1.0, 1.0, out=samples)


@dataclass
class Spooled:
    """A demuxed video parked for a single store writer, which copies it in bounded chunks: audio on local
    disk; frames on disk as raw RGB, or, when they were encoded on arrival, as the encoded rows in memory
    (JPEG: ~15 KB a frame, a tenth of raw)."""

    frames_file: Path | None  # raw (n, crop, crop, 3) uint8, or None (no video stream, or ``encoded``)
    n_frames: int
    audio_files: dict[int, Path]  # rate -> raw f32le mono
    info: MediaInfo
    crop: int
    encoded: list[np.ndarray] | None = None  # the frames in a codec's row form, batch by batch

    def frame_chunks(self, rows: int = 64) -> Iterator[np.ndarray]:
        """The frames (or their encoded rows) in order, a bounded number at a time."""
        if self.encoded is not None:
            yield from self.encoded
            return
        if self.frames_file is None or not self.n_frames:
            return
        frames = np.memmap(self.frames_file, np.uint8, "r", shape=(self.n_frames, self.crop, self.crop, 3))
        for i in range(0, self.n_frames, rows):
            yield np.array(frames[i : i + rows])

    def audio_chunks(self, rate: int, samples: int = 1 << 20) -> Iterator[np.ndarray]:
        path = self.audio_files.get(rate)
        if path is None:
            return
        total = path.stat().st_size // 4
        for start in range(0, total, samples):
            yield read_f32(path, start, min(samples, total - start))


def _check_disk(job: _Job, spool_dir: Path, raw_frames: bool) -> None:
    """Refuse before decoding when the spool would not fit: ffmpeg would otherwise fill the disk, fail
    half-way and starve every other writer on it."""
    c, duration = job.params.crop, job.probed.info.duration
    need = sum(4 * math.ceil(duration * rate) for rate in job.rates)
    need += job.expected * c * c * 3 if raw_frames else 0
    margin = max(_DISK_MARGIN, need // 20)
    free = shutil.disk_usage(spool_dir).free
    if need + margin > free:
        mb = 1 << 20
        raise job._error(
            f"not enough disk space to spool: needs {need // mb} MB + {margin // mb} MB margin, "
            f"{free // mb} MB free in {spool_dir}"
        )


def demux_to_spool(
    path: Path,
    params: DemuxParams,
    spool_dir: Path,
    batch: int = 64,
    encode: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Spooled:
    """:func:`demux`, but audio goes to files in ``spool_dir`` and frames either there too (raw) or, with
    ``encode`` (a store's frame codec), through it batch by batch as they leave ffmpeg, kept in memory.

    Encoding on arrival spares the round trip of raw frames through the spool (~150 KB a frame written and
    read back, 3 % of the ffmpeg pass's CPU). Memory: one batch, plus the encoded rows with ``encode``
    (~15 KB a JPEG frame: ~110 MB for the longest video ``max_duration_s`` admits). The free space in
    ``spool_dir`` is checked first (:func:`_check_disk`).
    """
    spool_dir.mkdir(parents=True, exist_ok=True)
    job = _Job(path, params, with_audio=True)
    _check_disk(job, spool_dir, raw_frames=encode is None)
    batches = job.batches(batch, audio_dir=spool_dir)
    if encode is not None:
        encoded = [encode(arr) for arr in batches]
        n = sum(len(rows) for rows in encoded)
        return Spooled(None, n, job.audio_files, job.probed.info, params.crop, encoded)
    frames_file = spool_dir / "frames.u8" if job.expected else None
    n = 0
    if frames_file is not None:
        with frames_file.open("wb") as out:
            for arr in batches:
                out.write(np.ascontiguousarray(arr).tobytes())
                n += len(arr)
    else:
        for _ in batches:
            pass
    return Spooled(frames_file, n, job.audio_files, job.probed.info, params.crop)


class _Job:
    """One ffmpeg run over one file; ``batches()`` streams frames, and once it is exhausted ``audio`` is
    filled in."""

    def __init__(
        self,
        path: Path,
        params: DemuxParams,
        *,
        with_audio: bool,
        with_frames: bool = True,
        probed: _Probed | None = None,
    ) -> None:
        """``probed``: the file's probe when another job of the same file already made it."""
        self.path = Path(path)
        self.params = params
        self.probed: _Probed = probed or _probe(self.path, params.max_duration_s)
        info = self.probed.info
        shown = info.has_video and with_frames
        self.expected = expected_frame_count(info.duration, params.fps) if shown else 0
        self.rates = sorted(set(int(r) for r in params.sample_rates)) if with_audio and info.has_audio else []
        self.audio: dict[int, np.ndarray] = {}
        self.audio_files: dict[int, Path] = {}

    def _error(self, reason: str) -> MediaError:
        return MediaError(reason, self.path.name)

    def _command(self, tmp: Path) -> tuple[list[str], dict[int, Path]]:
        p, info = self.probed, self.probed.info
        threads = {"threads": str(self.params.threads)} if self.params.threads else {}
        inp = ffmpeg.input(ffmpeg_path(self.path), **input_options(), **threads)
        # A file whose header claims less than it holds would decode on; stop every output past the limit
        # (plus tpad's extra period and one of slack, so a file just under it is unaffected).
        cap = {"t": repr(self.params.max_duration_s + 2 / self.params.fps)}
        outputs = []
        if self.expected:
            video = _video_chain(inp[str(p.video_index)], self.params)
            outputs.append(
                ffmpeg.output(
                    video, "pipe:1", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough", **cap
                )
            )
        files: dict[int, Path] = {}
        if self.rates:
            mono = _mono(inp[str(p.audio_index)], info.channels or 1)
            branches = [mono] if len(self.rates) == 1 else mono.filter_multi_output("asplit", len(self.rates))
            for i, rate in enumerate(self.rates):
                files[rate] = tmp / f"audio_{rate}.f32"
                resampled = branches[i].filter("aresample", rate, resampler="soxr")
                outputs.append(
                    ffmpeg.output(
                        resampled, ffmpeg_path(files[rate]), format="f32le", acodec="pcm_f32le", **cap
                    )
                )
        args = ffmpeg.merge_outputs(*outputs).compile()
        # The filter graph's own threads (ffmpeg's default: one per core), bound like the decoder's.
        graph = ["-filter_complex_threads", str(self.params.threads)] if self.params.threads else []
        return [args[0], *_GLOBAL_ARGS, *graph, *args[1:]], files

    def batches(self, batch: int = 64, audio_dir: Path | None = None) -> Iterator[np.ndarray]:
        """Frame batches; then the audio, loaded into ``self.audio`` — or, with ``audio_dir``, left there as
        ``audio_<rate>.f32`` files (``self.audio_files``) for a caller that streams it."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        if not self.expected and not self.rates:
            return
        if self.expected and self.params.decoder == "torchcodec":
            yield from self._torchcodec_batches(batch, audio_dir)
            return
        c = self.params.crop
        with tempfile.TemporaryDirectory(prefix="instrec-demux-") as tmpdir:
            args, files = self._command(Path(audio_dir or tmpdir))
            try:
                proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
            except OSError as exc:
                raise self._error(f"cannot run ffmpeg: {exc}") from exc
            stderr: deque[str] = deque(maxlen=50)
            reader = threading.Thread(target=_drain_stderr, args=(proc.stderr, stderr), daemon=True)
            reader.start()
            emitted, last, stopped_early = 0, None, False
            try:
                for arr in _read_batches(proc.stdout, (c, c, 3), batch):
                    take = min(len(arr), self.expected - emitted)
                    if take > 0:
                        last = arr[take - 1].copy()
                        yield arr[:take]
                        emitted += take
                    if emitted >= self.expected and not files:
                        stopped_early = True  # all frames in hand and no audio to wait for
                        break
                if stopped_early:
                    proc.kill()
                proc.wait()
                reader.join(timeout=10)  # stderr fully read before judging the run
                self._check(proc.returncode, stopped_early, emitted, list(stderr))
                if emitted < self.expected:
                    if last is None:
                        raise self._error(f"no video frame could be decoded: {last_line(list(stderr))}")
                    log.debug(
                        "%s: video stream ends early, repeating its last frame %d times",
                        self.path.name,
                        self.expected - emitted,
                    )
                    while emitted < self.expected:
                        k = min(batch, self.expected - emitted)
                        yield np.repeat(last[None], k, axis=0)
                        emitted += k
                self.audio_files = files
                for rate, f in files.items() if audio_dir is None else ():
                    self.audio[rate] = read_f32(f)
            finally:
                if proc.poll() is None:  # consumer stopped early or an exception: don't leave ffmpeg behind
                    proc.kill()
                    proc.wait()
                reader.join(timeout=10)  # the reader sees EOF once ffmpeg is gone; then close its pipe
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()

    def _torchcodec_batches(self, batch: int, audio_dir: Path | None) -> Iterator[np.ndarray]:
        """Frames from torchcodec, then the audio from an audio-only ffmpeg pass; a video torchcodec cannot
        show as a player does is decoded by ffmpeg instead (the default path, whole)."""
        from instrec_pipeline.media import torchcodec_frames as tc

        info, p = self.probed.info, self.params
        frames = tc.decode_frames(
            self.path, self.probed.video_index, frame_instants(info.duration, p.fps), resize=p.resize,
            crop=p.crop, geometry=p.geometry, sar=self.probed.sar, device=p.decode_device, batch=batch,
        )  # fmt: skip
        try:
            first = next(frames)
        except tc.Unsupported as why:
            log.debug("%s: decoded by ffmpeg (%s)", self.path.name, why)
            fallback = _Job(self.path, replace(p, decoder="ffmpeg"), with_audio=bool(self.rates),
                            probed=self.probed)  # fmt: skip
            yield from fallback.batches(batch, audio_dir)
            self.audio, self.audio_files = fallback.audio, fallback.audio_files
            return
        except Exception as exc:  # noqa: BLE001 - a decoding failure is the video's, reported as such
            raise self._error(f"torchcodec could not decode it: {exc}") from exc
        yield first
        try:
            yield from frames
        except Exception as exc:  # noqa: BLE001
            raise self._error(f"torchcodec could not decode it: {exc}") from exc
        audio = _Job(self.path, p, with_audio=bool(self.rates), with_frames=False, probed=self.probed)
        for _ in audio.batches(batch, audio_dir):
            pass
        self.audio, self.audio_files = audio.audio, audio.audio_files

    def _check(self, returncode: int, stopped_early: bool, emitted: int, stderr: list[str]) -> None:
        if stopped_early:
            return
        message = last_line(stderr)
        if returncode != 0:
            raise self._error(f"ffmpeg failed (exit {returncode}): {message}")
        if any("partial file" in line for line in stderr):
            raise self._error(f"truncated file: {message}")
        shortfall = self.expected - emitted
        if stderr and shortfall > max(1, self.expected // 10):
            raise self._error(f"decoded only {emitted} of {self.expected} frames: {message}")


def demux(path: Path, params: DemuxParams = DemuxParams()) -> Demuxed:
    """Frames at the instants ``(i + 0.5) / fps`` and mono audio at each rate, in one ffmpeg pass.

    Raises :class:`MediaError` for anything that is not a decodable audio/video file.
    """
    job = _Job(path, params, with_audio=True)
    c = params.crop
    frames = np.empty((job.expected, c, c, 3), dtype=np.uint8)
    n = 0
    for arr in job.batches():
        frames[n : n + len(arr)] = arr
        n += len(arr)
    info = job.probed.info
    return Demuxed(
        frames=frames,
        audio=job.audio,
        frame_times=frame_instants(info.duration, params.fps) if job.expected else np.zeros(0),
        info=info,
    )


def iter_frames(
    path: Path,
    params: DemuxParams = DemuxParams(),
    batch: int = 64,
) -> Iterator[np.ndarray]:
    """Stream the same frames as :func:`demux` in ``(≤batch, crop, crop, 3)`` arrays, without audio.

    Memory stays at about one batch however long the video; the file is probed on the first ``next()``
    (a :class:`MediaError` surfaces there). Closing the iterator early kills ffmpeg.
    """
    yield from _Job(path, params, with_audio=False).batches(batch)
