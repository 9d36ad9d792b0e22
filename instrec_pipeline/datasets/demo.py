"""Embedded demo dataset: small, deterministic, generated on this machine.

Why it exists: FCVID / YouTube-8M media cannot be shipped or downloaded in CI, yet every stage of the
pipeline (decoding, log-mel, frame sampling, training, fusion, evaluation) must run end-to-end on real
containers. So the project synthesises its own "performances": real sampled instrument sounds (a General
MIDI soundfont rendered by fluidsynth from seeded melodies) and frames whose colour and moving shape depend
on the class, muxed by ffmpeg into ordinary mp4 files (h264 + aac), like user-generated videos.

Both modalities are learnable on their own, so unimodal and fused models all have signal to find, and the
same spec always yields the same manifest and the same audio content.
"""

from __future__ import annotations

import colorsys
import concurrent.futures
import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
import wave
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import mido
import numpy as np

__all__ = [
    "DEMO_CLASSES",
    "GM_PROGRAMS",
    "MANIFEST_COLUMNS",
    "DemoSpec",
    "find_soundfont",
    "generate_demo",
]

log = logging.getLogger(__name__)

DEMO_CLASSES: tuple[str, ...] = ("accordion", "flute", "guitar", "piano", "trumpet", "violin")

# General MIDI programs (0-based): 21 Accordion, 73 Flute, 25 Acoustic Guitar (steel), 0 Acoustic Grand
# Piano, 56 Trumpet, 40 Violin.
GM_PROGRAMS: dict[str, int] = {
    "accordion": 21,
    "flute": 73,
    "guitar": 25,
    "piano": 0,
    "trumpet": 56,
    "violin": 40,
}

MANIFEST_COLUMNS: tuple[str, ...] = ("video_id", "source", "label", "split")

# Bump when the generator's output changes for the same spec, so stale demo data gets rebuilt.
GENERATOR_VERSION = 1

_SOUNDFONT_DIR = Path("/usr/share/sounds/sf2")
_SOUNDFONT_NAMES = ("FluidR3_GM.sf2", "TimGM6mb.sf2", "default-GM.sf2")
_INSTALL_HINT = "apt-get install fluidsynth fluid-soundfont-gm"
_STAMP_NAME = "demo_spec.json"
_LOCK_NAME = ".demo.lock"
_MANIFEST_NAME = "manifest.csv"
_MEDIA_DIR = "media"
_PARTIAL_SUFFIX = ".partial.mp4"
_WORKERS = 2  # one fluidsynth/ffmpeg pair per core on the 2-core reference machine
_SAMPLE_RATE = 44100
_MIN_RMS = 1e-3  # rendered melodies measure ~0.02-0.1; below this the soundfont did not load
_TICKS_PER_BEAT = 480
_TEMPO_US = 500_000  # 120 bpm -> 960 ticks per second
_TICKS_PER_SECOND = _TICKS_PER_BEAT * 1_000_000 / _TEMPO_US
# Independent random streams per video, so e.g. changing the frame code never changes the melodies.
_STREAM_DURATION, _STREAM_MELODY, _STREAM_FRAMES, _STREAM_SPLIT = range(1, 5)
_RNG_TAG = 0x1D3A0  # arbitrary, fixed: namespaces this module's random streams


@dataclass(frozen=True)
class _Voice:
    """How a class sounds: playable register (MIDI notes), chord probability, typical loudness."""

    low: int
    high: int
    chord_prob: float
    velocity: int


# Registers roughly follow the real instruments so that timbre AND pitch range carry class evidence;
# monophonic instruments get no chords (a trumpet chord would be a tell-tale artefact).
_VOICES: dict[str, _Voice] = {
    "accordion": _Voice(53, 81, 0.30, 90),
    "flute": _Voice(60, 93, 0.0, 100),
    "guitar": _Voice(40, 76, 0.35, 95),
    "piano": _Voice(45, 84, 0.35, 85),
    "trumpet": _Voice(55, 82, 0.0, 95),
    "violin": _Voice(55, 91, 0.08, 95),
}


@dataclass(frozen=True)
class _Look:
    """How a class looks: dominant hue (degrees) and the moving pattern drawn over the background."""

    hue: float
    pattern: str


# Hues ~60 degrees apart and one distinct shape per class: a CNN separates them from a single frame.
_LOOKS: dict[str, _Look] = {
    "accordion": _Look(0.0, "bellows"),  # red, vertical stripes sliding sideways
    "trumpet": _Look(55.0, "rings"),  # gold, rings expanding from a bell
    "guitar": _Look(115.0, "disc"),  # green, bouncing disc (sound hole)
    "flute": _Look(180.0, "bar"),  # cyan, long thin bar drifting
    "piano": _Look(235.0, "keys"),  # blue, scrolling keyboard
    "violin": _Look(300.0, "bow"),  # magenta, rotating bow
}

_SCALES: tuple[tuple[int, ...], ...] = (
    (0, 2, 4, 5, 7, 9, 11),  # major
    (0, 2, 3, 5, 7, 8, 10),  # natural minor
    (0, 2, 3, 5, 7, 9, 10),  # dorian
)


@dataclass(frozen=True)
class DemoSpec:
    """What to generate; the whole spec (plus GENERATOR_VERSION) keys the on-disk cache."""

    classes: tuple[str, ...] = DEMO_CLASSES
    videos_per_class: int = 8
    min_seconds: float = 5.0
    max_seconds: float = 12.0
    width: int = 320
    height: int = 240
    fps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        # Fail before any subprocess runs: a bad spec would otherwise surface as an obscure ffmpeg error.
        unknown = [c for c in self.classes if c not in GM_PROGRAMS]
        if not self.classes or unknown:
            raise ValueError(f"classes must be a non-empty subset of {DEMO_CLASSES}; unknown: {unknown}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"duplicate classes in {self.classes}")
        if self.videos_per_class < 1:
            raise ValueError("videos_per_class must be >= 1")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError("need 0 < min_seconds <= max_seconds")
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even and >= 16 (yuv420p needs even sizes)")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.fps < 1:
            raise ValueError("fps must be >= 1")
        if math.floor(self.max_seconds * self.fps) < 1:
            raise ValueError("max_seconds * fps must allow at least one frame")


@dataclass(frozen=True)
class _VideoPlan:
    video_id: str
    label: str
    index: int
    split: str
    n_frames: int

    @property
    def source(self) -> str:
        return f"{_MEDIA_DIR}/{self.video_id}.mp4"


def find_soundfont() -> Path:
    """Locate a General MIDI soundfont: ``$INSTREC_SOUNDFONT`` first, then the Debian defaults.

    The env var lets tests and other distros point elsewhere without code changes.
    """
    env = os.environ.get("INSTREC_SOUNDFONT")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"INSTREC_SOUNDFONT={env!r} is not a file")
        return path
    for name in _SOUNDFONT_NAMES:
        path = _SOUNDFONT_DIR / name
        if path.is_file():  # follows the default-GM.sf2 alternatives symlink
            return path
    raise FileNotFoundError(
        f"no General MIDI soundfont found (looked for {', '.join(_SOUNDFONT_NAMES)} in {_SOUNDFONT_DIR}); "
        f"install one with `{_INSTALL_HINT}` or set INSTREC_SOUNDFONT"
    )


def generate_demo(root: Path, spec: DemoSpec = DemoSpec()) -> Path:
    """Writes root/media/<video_id>.mp4 and root/manifest.csv; returns the manifest path.

    Cheap when already done (stamp + manifest + files present). The stamp is written before any video
    and the manifest last, each atomically, so a crash leaves either a resumable state (stamp matches:
    finished videos are kept) or nothing that passes for a complete dataset.
    """
    root = Path(root)
    manifest = root / _MANIFEST_NAME
    stamp_path = root / _STAMP_NAME
    plans = _plan(spec)

    try:
        soundfont: Path | None = find_soundfont()
    except FileNotFoundError:
        soundfont = None  # still fine if the dataset is already complete; raised again below otherwise
    stamp = _stamp(spec, soundfont)
    if _state(root, stamp, plans) == "complete":
        return manifest

    if soundfont is None:
        find_soundfont()  # raises the helpful error
    assert soundfont is not None
    for tool in ("fluidsynth", "ffmpeg"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"`{tool}` not on PATH; install it (`apt-get install {tool}`)")

    media = root / _MEDIA_DIR
    media.mkdir(parents=True, exist_ok=True)
    # Two processes (e.g. concurrent Dagster runs) may ask for the same root: one builds, the other waits.
    with open(root / _LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = _state(root, stamp, plans)  # re-check: the other process may have finished meanwhile
        if state == "complete":
            return manifest
        for partial in media.glob(f".*{_PARTIAL_SUFFIX}"):  # debris of an interrupted run
            partial.unlink(missing_ok=True)
        if state == "stale":
            # Files from another spec (or generator version) must not be reused on a later resume.
            for source in {p.source for p in plans} | _manifest_sources(manifest):
                (root / source).unlink(missing_ok=True)
        manifest.unlink(missing_ok=True)  # nothing may look complete while we work
        if state == "stale":
            _atomic_write_text(stamp_path, json.dumps(stamp, indent=2, sort_keys=True) + "\n")

        todo = [p for p in plans if not (root / p.source).is_file()]  # resume keeps finished videos
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            futures = [pool.submit(_make_video, root / p.source, p, spec, soundfont) for p in todo]
            try:
                for future in concurrent.futures.as_completed(futures):
                    future.result()
            except BaseException:
                for future in futures:  # fail fast instead of rendering the rest first
                    future.cancel()
                raise
        log.info("demo dataset: %d videos in %.1f s under %s", len(todo), time.perf_counter() - started, root)

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows((p.video_id, p.source, p.label, p.split) for p in plans)
        _atomic_write_text(manifest, buf.getvalue())
    return manifest


def _state(root: Path, stamp: dict, plans: list[_VideoPlan]) -> str:
    """'complete' (nothing to do), 'resumable' (same spec, some work missing) or 'stale' (start over)."""
    old = _read_json(root / _STAMP_NAME)
    if old is None or not _stamp_matches(old, stamp):
        return "stale"
    if (root / _MANIFEST_NAME).is_file() and all((root / p.source).is_file() for p in plans):
        return "complete"
    return "resumable"


# ----------------------------------------------------------------------------------------------------------
# planning, stamp, files


def _rng(spec: DemoSpec, label: str, index: int, stream: int) -> np.random.Generator:
    """Independent stream per (seed, class, video, purpose); keyed by class NAME so that adding or
    reordering classes does not change the other classes' videos."""
    # Leading constant tag: SeedSequence ignores trailing zeros, so keep every key the same length and
    # tagged to avoid accidental collisions with other seeded code.
    return np.random.default_rng([_RNG_TAG, spec.seed, zlib.crc32(label.encode()), index, stream])


def _split_sizes(n: int) -> tuple[int, int, int]:
    """~50/25/25 train/val/test, at least one of each from 3 videos up (8 -> 4/2/2)."""
    if n == 1:
        return 1, 0, 0
    if n == 2:
        return 1, 0, 1
    n_val = max(1, round(n * 0.25))
    n_test = max(1, round(n * 0.25))
    return n - n_val - n_test, n_val, n_test


def _plan(spec: DemoSpec) -> list[_VideoPlan]:
    lo_frames = max(1, math.ceil(spec.min_seconds * spec.fps - 1e-9))
    hi_frames = max(lo_frames, math.floor(spec.max_seconds * spec.fps + 1e-9))
    plans: list[_VideoPlan] = []
    for label in spec.classes:
        n_train, n_val, _ = _split_sizes(spec.videos_per_class)
        order = _rng(spec, label, 0, _STREAM_SPLIT).permutation(spec.videos_per_class)
        split_of = {}
        for rank, idx in enumerate(order):
            split_of[int(idx)] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        for i in range(spec.videos_per_class):
            seconds = _rng(spec, label, i, _STREAM_DURATION).uniform(spec.min_seconds, spec.max_seconds)
            n_frames = int(np.clip(round(seconds * spec.fps), lo_frames, hi_frames))
            plans.append(_VideoPlan(f"{label}_{i:03d}", label, i, split_of[i], n_frames))
    return plans


def _stamp(spec: DemoSpec, soundfont: Path | None) -> dict:
    spec_dict = dataclasses.asdict(spec)
    spec_dict["classes"] = list(spec.classes)
    sf = None if soundfont is None else {"name": soundfont.name, "bytes": soundfont.stat().st_size}
    return {"generator_version": GENERATOR_VERSION, "spec": spec_dict, "soundfont": sf}


def _stamp_matches(old: dict, new: dict) -> bool:
    """Spec and generator must match; the soundfont too, unless none is installed now (keep what exists)."""
    if old.get("generator_version") != new["generator_version"] or old.get("spec") != new["spec"]:
        return False
    return new["soundfont"] is None or old.get("soundfont") == new["soundfont"]


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _manifest_sources(path: Path) -> set[str]:
    try:
        with path.open(newline="") as f:
            return {row["source"] for row in csv.DictReader(f) if row.get("source")}
    except (OSError, KeyError, csv.Error):
        return set()


def _atomic_write_text(path: Path, text: str) -> None:
    """Temp file in the same folder + os.replace: readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the dataset is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------------------
# audio


def _melody(label: str, seconds: float, rng: np.random.Generator) -> mido.MidiFile:
    """A seeded melody in a random key/scale covering ``seconds``: 0.2-0.6 s notes, a few chords, varied
    velocity, occasional rests; the last note rings past the end so the audio never runs short."""
    voice = _VOICES[label]
    scale = _SCALES[int(rng.integers(len(_SCALES)))]
    key = int(rng.integers(12))
    degrees = [12 * octave + key + step for octave in range(11) for step in scale]
    pitches = [p for p in degrees if voice.low <= p <= voice.high]
    pos = int(rng.integers(len(pitches) // 4, 3 * len(pitches) // 4 + 1))
    base_velocity = voice.velocity + int(rng.integers(-10, 11))

    events: list[tuple[int, int, mido.Message]] = []  # (tick, order: offs before ons, message)

    def add(start_s: float, end_s: float, note: int, velocity: int) -> None:
        on, off = round(start_s * _TICKS_PER_SECOND), round(end_s * _TICKS_PER_SECOND)
        events.append((on, 1, mido.Message("note_on", note=note, velocity=velocity)))
        events.append((max(off, on + 1), 0, mido.Message("note_off", note=note, velocity=0)))

    t = 0.02
    while t < seconds:
        length = float(rng.uniform(0.2, 0.6))
        if rng.random() < 0.07:  # a breath / rest
            t += float(rng.uniform(0.1, 0.3))
            continue
        pos = int(np.clip(pos + rng.choice([-3, -2, -1, -1, 0, 1, 1, 2, 3]), 0, len(pitches) - 1))
        velocity = int(np.clip(base_velocity + rng.normal(0, 12), 35, 125))
        add(t, t + 0.95 * length, pitches[pos], velocity)
        if rng.random() < voice.chord_prob:  # triad from the scale below the melody note
            for step in (2, 4):
                if pos - step >= 0:
                    add(t, t + 0.95 * length, pitches[pos - step], max(30, velocity - 15))
        t += length

    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=_TEMPO_US, time=0))
    track.append(mido.Message("program_change", program=GM_PROGRAMS[label], time=0))
    track.append(mido.Message("control_change", control=7, value=110, time=0))  # channel volume
    track.append(mido.Message("control_change", control=10, value=int(rng.integers(40, 89)), time=0))  # pan
    now = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1], e[2].note)):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=round(0.3 * _TICKS_PER_SECOND)))
    midi = mido.MidiFile(ticks_per_beat=_TICKS_PER_BEAT)
    midi.tracks.append(track)
    return midi


def _render_wav(midi_path: Path, wav_path: Path, soundfont: Path) -> None:
    """fluidsynth fast-render (no audio device, no shell): deterministic for a given soundfont."""
    cmd = [
        "fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(_SAMPLE_RATE), "-o", "synth.cpu-cores=1",
        "-o", "synth.dynamic-sample-loading=1",  # load only the samples used: 2.5x faster, same output
        "-F", str(wav_path), "-T", "wav", "-O", "s16",
        str(soundfont), str(midi_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    # fluidsynth exits 0 when our soundfont fails to load: it then quietly renders with its built-in
    # default soundfont (or renders silence if there is none). Judge it by its messages and its output.
    output = proc.stderr + proc.stdout
    rms = _wav_rms(wav_path) if proc.returncode == 0 and wav_path.is_file() else 0.0
    if rms < _MIN_RMS or "not a SoundFont" in output:
        raise RuntimeError(
            f"fluidsynth failed to render with {soundfont} (exit {proc.returncode}, rms {rms:.5f}): "
            f"{output[-2000:]}"
        )


def _wav_rms(path: Path) -> float:
    """RMS of a 16-bit WAV in [0, 1]."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                return 0.0
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    except (OSError, EOFError, wave.Error):
        return 0.0
    return float(np.sqrt(np.mean(pcm**2))) if pcm.size else 0.0


# ----------------------------------------------------------------------------------------------------------
# video


def _frames(plan: _VideoPlan, spec: DemoSpec, rng: np.random.Generator) -> Iterator[bytes]:
    """rgb24 frames: class hue (jittered) as a vertical gradient + the class pattern moving with a
    per-video seeded position/speed/size/brightness, so the class is visible but no two videos match."""
    look = _LOOKS[plan.label]
    w, h = spec.width, spec.height
    scale = min(w, h) / 240.0
    hue = (look.hue + rng.uniform(-8, 8)) % 360 / 360
    sat = rng.uniform(0.55, 0.9)
    v_top, v_bottom = rng.uniform(0.35, 0.8), rng.uniform(0.35, 0.8)
    base = np.array(colorsys.hsv_to_rgb(hue, sat, 1.0), dtype=np.float32)
    # fg: light tint of the complementary hue, readable on any background brightness
    fg = 0.55 + 0.45 * np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1, 0.5, 1.0), dtype=np.float32)
    fg *= rng.uniform(0.8, 1.0)
    gradient = np.linspace(v_top, v_bottom, h, dtype=np.float32)[:, None, None] * base * 255  # (h, 1, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    cx0, cy0 = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    speed = rng.uniform(0.6, 1.6) * rng.choice([-1.0, 1.0])
    phase = rng.uniform(0, 2 * math.pi)
    size = rng.uniform(0.8, 1.2) * scale
    flicker = rng.uniform(0.0, 0.08)

    for k in range(plan.n_frames):
        t = k / spec.fps
        if look.pattern == "bellows":
            period, half = 28 * size, 60 * size
            cy = cy0 + 20 * scale * math.sin(0.7 * t + phase)
            mask = (np.sin(2 * math.pi * (xx - 40 * speed * t) / period) > 0) & (np.abs(yy - cy) < half)
        elif look.pattern == "rings":
            cx = cx0 + 25 * scale * math.sin(0.5 * t + phase)
            r = np.hypot(xx - cx, yy - cy0)
            mask = (np.sin(2 * math.pi * (r - 30 * abs(speed) * t) / (26 * size)) > 0.2) & (r < 110 * size)
        elif look.pattern == "disc":
            cx = w / 2 + 0.35 * w * math.sin(speed * t + phase)
            cy = h / 2 + 0.3 * h * math.sin(1.3 * speed * t + 2 * phase)
            mask = np.hypot(xx - cx, yy - cy) < 42 * size
        elif look.pattern == "bar":
            cy = h / 2 + 0.35 * h * math.sin(0.8 * speed * t + phase)
            cx = cx0 + 0.15 * w * math.sin(0.5 * t)
            mask = (np.abs(yy - cy) < 7 * size) & (np.abs(xx - cx) < 0.38 * w)
        elif look.pattern == "keys":
            top = cy0 - 35 * size
            key_w = 18 * size
            u = (xx - 35 * speed * t) / key_w
            band = (yy > top) & (yy < top + 90 * size)
            white = band & ((u % 1.0) > 0.08)
            black_pos = np.floor(u % 7)  # black keys after white keys 0,1,3,4,5 of each octave
            black = (yy < top + 55 * size) & ((u % 1.0) > 0.65) & np.isin(black_pos, (0, 1, 3, 4, 5))
            mask = white & ~black
        else:  # "bow": a long bar rotating about a drifting pivot
            angle = phase + 0.9 * speed * t
            cx = cx0 + 20 * scale * math.sin(0.4 * t)
            dx, dy = xx - cx, yy - cy0
            along = dx * math.cos(angle) + dy * math.sin(angle)
            across = -dx * math.sin(angle) + dy * math.cos(angle)
            mask = (np.abs(across) < 6 * size) & (np.abs(along) < 95 * size)
        gain = 1.0 + flicker * math.sin(2.1 * t + phase)  # global brightness drift, like auto-exposure
        bg_u8 = np.clip(gradient * gain, 0, 255).astype(np.uint8)
        fg_u8 = np.clip(fg * 255 * gain, 0, 255).astype(np.uint8)
        yield np.where(mask[:, :, None], fg_u8, bg_u8).tobytes()  # broadcasts to (h, w, 3) uint8


def _make_video(out: Path, plan: _VideoPlan, spec: DemoSpec, soundfont: Path) -> None:
    """Render audio, pipe frames into ffmpeg, mux to a temp name, then os.replace onto ``out``."""
    seconds = plan.n_frames / spec.fps
    with tempfile.TemporaryDirectory(prefix="instrec-demo-") as tmp_dir:
        midi_path, wav_path = Path(tmp_dir) / "song.mid", Path(tmp_dir) / "song.wav"
        _melody(plan.label, seconds, _rng(spec, plan.label, plan.index, _STREAM_MELODY)).save(str(midi_path))
        _render_wav(midi_path, wav_path, soundfont)

        fd, partial = tempfile.mkstemp(dir=out.parent, prefix=f".{plan.video_id}.", suffix=_PARTIAL_SUFFIX)
        os.close(fd)
        os.chmod(partial, 0o644)
        try:
            video = ffmpeg.input(
                "pipe:",
                format="rawvideo",
                pix_fmt="rgb24",
                s=f"{spec.width}x{spec.height}",
                framerate=spec.fps,
            )
            audio = ffmpeg.input(str(wav_path)).audio.filter("apad")  # never let the audio end first
            graph = ffmpeg.output(
                video, audio, partial, format="mp4", t=f"{seconds:.6f}", shortest=None,
                vcodec="libx264", preset="veryfast", crf=23, pix_fmt="yuv420p", threads=1,
                acodec="aac", aac_coder="fast", ac=2, ar=_SAMPLE_RATE,
                movflags="+faststart", fflags="+bitexact",
                **{"b:a": "128k"},
            ).global_args("-hide_banner", "-nostats", "-loglevel", "error")  # fmt: skip
            cmd = ffmpeg.compile(graph, overwrite_output=True)
            with tempfile.TemporaryFile() as err:  # a file, not a pipe: no deadlock while we feed stdin
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
                assert proc.stdin is not None
                frames = _frames(plan, spec, _rng(spec, plan.label, plan.index, _STREAM_FRAMES))
                try:
                    with contextlib.suppress(BrokenPipeError):  # ffmpeg died early; its stderr says why
                        for frame in frames:
                            proc.stdin.write(frame)
                    with contextlib.suppress(BrokenPipeError):
                        proc.stdin.close()
                except BaseException:
                    proc.kill()  # never leave an orphan ffmpeg waiting on stdin
                    proc.wait()
                    raise
                code = proc.wait()
                if code != 0:
                    err.seek(0)
                    message = err.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"ffmpeg failed ({code}) for {plan.video_id}: {message}")
            os.replace(partial, out)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
