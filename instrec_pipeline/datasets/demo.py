"""Embedded demo dataset: small, deterministic, generated on this machine.

Why it exists: FCVID / YouTube-8M media cannot be shipped or downloaded in CI, yet every stage of the
pipeline (decoding, log-mel, frame sampling, training, fusion, evaluation) must run end-to-end on real
containers. So the project synthesises its own "performances": real sampled instrument sounds (a General
MIDI soundfont rendered by fluidsynth from seeded melodies) and frames whose colour and moving shape depend
on the class, muxed by ffmpeg into ordinary mp4 files (h264 + aac), like user-generated videos.

Both modalities are learnable on their own, so unimodal and fused models all have signal to find, and the
same spec always yields the same manifest and the same audio content.

Harder corpora (benchmarks on held-out data) use the same generator with more classes (all twelve FCVID
ones: ensembles play several General MIDI parts, a rock band has a drum kit) and a :class:`Degradation`:
background noise, a quieter second instrument with cut-aways to it, visual clutter, and for the test split
alone another soundfont or other programs of the same families (a shift at test). Every such option is off
by default, and left out of the stamp while off, so the embedded demo stays byte-identical.
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

from instrec_pipeline.settings import DemoSettings

__all__ = [
    "CLASS_PROGRAMS",
    "DEMO_CLASSES",
    "DRUMS",
    "GM_PROGRAMS",
    "MANIFEST_COLUMNS",
    "PROGRAM_VARIANTS",
    "Degradation",
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

#: Not a GM program: the percussion channel (MIDI channel 10), playing a rock beat on the standard kit.
DRUMS = -1

#: Every class the generator can play, as the GM programs of its parts: the demo's six play one part each;
#: FCVID's ensembles play several, each its own line in a shared key.
CLASS_PROGRAMS: dict[str, tuple[int, ...]] = {
    **{label: (program,) for label, program in GM_PROGRAMS.items()},
    "cello": (42,),
    "harmonica": (22,),
    "saxophone": (65,),  # alto sax
    "chamberMusic": (40, 41, 42),  # violin, viola, cello
    "rockBand": (30, 33, DRUMS),  # distortion guitar, electric bass (finger), drum kit
    "symphonyOrchestra": (48, 61, 47),  # string ensemble 1, brass section, timpani
}

#: Other GM programs of the same instrument families (same parts, same registers): a timbre shift at test
#: when no second soundfont is installed. GM has one cello and one harmonica, so those stay as they are.
PROGRAM_VARIANTS: dict[str, tuple[int, ...]] = {
    "accordion": (23,),  # tango accordion
    "flute": (72,),  # piccolo
    "guitar": (24,),  # nylon instead of steel
    "piano": (1,),  # bright acoustic piano
    "trumpet": (59,),  # muted trumpet
    "violin": (110,),  # fiddle
    "cello": (42,),
    "harmonica": (22,),
    "saxophone": (66,),  # tenor sax
    "chamberMusic": (110, 41, 42),  # a fiddle leads
    "rockBand": (29, 34, DRUMS),  # overdriven guitar, picked bass
    "symphonyOrchestra": (49, 60, 47),  # string ensemble 2, french horn
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
# Streams of the Degradation options only (new numbers, so the four above never change).
_STREAM_EXTRAS, _STREAM_DISTRACTOR, _STREAM_NOISE, _STREAM_CUTAWAY, _STREAM_CLUTTER = range(5, 10)
_DRUM_CHANNEL = 9
_SOLO_VOLUME, _ENSEMBLE_VOLUME = 110, 88  # channel volume (CC 7): parts of an ensemble share the headroom
_PEAK = 0.95  # a mix (noise, several parts) louder than this is scaled down: no clipping
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

# The other FCVID classes, one voice per part (CLASS_PROGRAMS' order); drums ignore theirs.
_PART_VOICES: dict[str, tuple[_Voice, ...]] = {
    "cello": (_Voice(36, 72, 0.05, 95),),
    "harmonica": (_Voice(60, 84, 0.15, 95),),
    "saxophone": (_Voice(49, 81, 0.0, 95),),
    "chamberMusic": (_Voice(55, 88, 0.05, 90), _Voice(48, 76, 0.05, 85), _Voice(36, 64, 0.05, 85)),
    "rockBand": (_Voice(40, 69, 0.5, 100), _Voice(28, 50, 0.0, 100), _Voice(0, 127, 0.0, 100)),
    "symphonyOrchestra": (_Voice(48, 84, 0.6, 85), _Voice(45, 74, 0.4, 90), _Voice(40, 55, 0.0, 95)),
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
    # The other FCVID classes, on the hues between. Two pairs of neighbours share a shape, 30 degrees apart:
    # cello / violin (bowed) and saxophone / trumpet (bells); with clutter the picture alone confuses them,
    # the sound does not. Elsewhere a hue's neighbours differ in shape.
    "harmonica": _Look(27.0, "holes"),  # orange, a short bar with a row of holes
    "saxophone": _Look(85.0, "rings"),  # yellow-green, rings like the trumpet's
    "rockBand": _Look(148.0, "eq"),  # green-cyan, bouncing level bars (stage lights)
    "symphonyOrchestra": _Look(208.0, "grid"),  # azure, rows of seats
    "chamberMusic": _Look(268.0, "grid"),  # violet, rows of seats
    "cello": _Look(330.0, "bow"),  # pink, rotating bow
}

_SCALES: tuple[tuple[int, ...], ...] = (
    (0, 2, 4, 5, 7, 9, 11),  # major
    (0, 2, 3, 5, 7, 8, 10),  # natural minor
    (0, 2, 3, 5, 7, 9, 10),  # dorian
)


@dataclass(frozen=True)
class Degradation:
    """What makes a corpus harder than the demo; the defaults change nothing (the demo's own setting).

    Each video draws its options from its own random stream, so one setting never moves another's draws.
    """

    #: Share of the videos with background noise (pink, slowly swelling), at an SNR drawn from ``snr_db``.
    noise_prob: float = 0.0
    snr_db: tuple[float, float] = (10.0, 25.0)
    #: Share of the videos where a second instrument (another single-instrument class) plays, quieter.
    distractor_prob: float = 0.0
    #: Up to this share of such a video's frames (one run) cut away to the distractor's own look.
    cutaways: float = 0.0
    #: 0-1: hue and saturation jitter, brightness flicker, sensor noise and a passing occluder.
    clutter: float = 0.0
    #: Render with this soundfont (a path, or a file name in /usr/share/sounds/sf2); "" = the default one.
    soundfont: str = ""
    #: Play PROGRAM_VARIANTS instead of CLASS_PROGRAMS (other programs of the same families).
    variants: bool = False

    def __post_init__(self) -> None:
        for name in ("noise_prob", "distractor_prob", "cutaways", "clutter"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db must be (low, high) with low <= high, got {self.snr_db}")

    @property
    def clean(self) -> bool:
        return self == Degradation()


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
    #: Harder data: applied to every split, and to test too unless ``test_degradation`` is given.
    degradation: Degradation = Degradation()
    #: The test split's own setting (a shift at test: another soundfont, variants, more noise).
    test_degradation: Degradation | None = None

    def __post_init__(self) -> None:
        # Fail before any subprocess runs: a bad spec would otherwise surface as an obscure ffmpeg error.
        unknown = [c for c in self.classes if c not in CLASS_PROGRAMS]
        if not self.classes or unknown:
            raise ValueError(
                f"classes must be a non-empty subset of {tuple(CLASS_PROGRAMS)}; unknown: {unknown}"
            )
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


@dataclass(frozen=True)
class _Extras:
    """One video's draws from its Degradation: what it plays, over what noise, with which distractor."""

    programs: tuple[int, ...]
    snr_db: float | None = None
    distractor: str | None = None
    cutaway: float = 0.0  # share of frames cut away to the distractor


def find_soundfont(name: str = "") -> Path:
    """Locate a General MIDI soundfont: ``$INSTREC_SOUNDFONT`` first, then the Debian defaults; or the one
    ``name``d (a path, or a file name in /usr/share/sounds/sf2), e.g. a second soundfont for a shift at test.

    The env var lets tests and other distros point elsewhere without code changes.
    """
    if name:
        path = Path(name).expanduser()
        path = path if path.is_absolute() or path.is_file() else _SOUNDFONT_DIR / name
        if not path.is_file():
            raise FileNotFoundError(f"soundfont {name!r} not found (as a path or in {_SOUNDFONT_DIR})")
        return path
    given = DemoSettings.read().soundfont
    if given is not None:
        path = given.expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"INSTREC_SOUNDFONT={str(given)!r} is not a file")
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
    named = _named_soundfonts(spec)
    stamp = _stamp(spec, soundfont, named)
    if _state(root, stamp, plans) == "complete":
        return manifest

    if soundfont is None:
        find_soundfont()  # raises the helpful error
    assert soundfont is not None
    for name, path in named.items():
        if path is None:
            find_soundfont(name)  # raises: a shift that cannot be rendered must not pass for one
    soundfont_of = {split: _soundfont_for(spec, split, soundfont) for split in ("train", "val", "test")}
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
            futures = [
                pool.submit(_make_video, root / p.source, p, spec, soundfont_of[p.split]) for p in todo
            ]
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


def _degradation(spec: DemoSpec, split: str) -> Degradation:
    """The setting of one split: val is like train (early stopping sees the training distribution)."""
    if split == "test" and spec.test_degradation is not None:
        return spec.test_degradation
    return spec.degradation


def _named_soundfonts(spec: DemoSpec) -> dict[str, Path | None]:
    """The soundfonts the degradations name, resolved (None: not installed here)."""
    out: dict[str, Path | None] = {}
    for deg in (spec.degradation, spec.test_degradation):
        if deg is not None and deg.soundfont:
            try:
                out[deg.soundfont] = find_soundfont(deg.soundfont)
            except FileNotFoundError:
                out[deg.soundfont] = None
    return out


def _soundfont_for(spec: DemoSpec, split: str, default: Path) -> Path:
    name = _degradation(spec, split).soundfont
    return find_soundfont(name) if name else default


def _sf_id(path: Path) -> dict:
    return {"name": path.name, "bytes": path.stat().st_size}


def _stamp(spec: DemoSpec, soundfont: Path | None, named: dict[str, Path | None] | None = None) -> dict:
    spec_dict = dataclasses.asdict(spec)
    spec_dict["classes"] = list(spec.classes)
    # The degradation fields appear only when set: the demo's stamp (and so its cache) stays as it was.
    if spec.degradation.clean:
        del spec_dict["degradation"]
    if spec.test_degradation is None:
        del spec_dict["test_degradation"]
    spec_dict = json.loads(json.dumps(spec_dict))  # tuples as lists, as they read back from the file
    sf = None if soundfont is None else _sf_id(soundfont)
    stamp = {"generator_version": GENERATOR_VERSION, "spec": spec_dict, "soundfont": sf}
    if named:
        stamp["named_soundfonts"] = {k: None if v is None else _sf_id(v) for k, v in sorted(named.items())}
    return stamp


def _stamp_matches(old: dict, new: dict) -> bool:
    """Spec and generator must match; the soundfonts too, unless not installed now (keep what exists)."""
    if old.get("generator_version") != new["generator_version"] or old.get("spec") != new["spec"]:
        return False
    named_old = old.get("named_soundfonts") or {}
    for name, sf in (new.get("named_soundfonts") or {}).items():
        if sf is not None and named_old.get(name) != sf:
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
    return _song(label, seconds, rng)


_Events = list[tuple[int, int, mido.Message]]  # (tick, order: offs before ons, message)


def _note(events: _Events, start_s: float, end_s: float, note: int, velocity: int, channel: int) -> None:
    on, off = round(start_s * _TICKS_PER_SECOND), round(end_s * _TICKS_PER_SECOND)
    events.append((on, 1, mido.Message("note_on", channel=channel, note=note, velocity=velocity)))
    events.append((max(off, on + 1), 0, mido.Message("note_off", channel=channel, note=note, velocity=0)))


def _song(
    label: str,
    seconds: float,
    rng: np.random.Generator,
    programs: tuple[int, ...] | None = None,
    distractor: str | None = None,
    distractor_rng: np.random.Generator | None = None,
) -> mido.MidiFile:
    """One track per part of ``label`` (its CLASS_PROGRAMS, or ``programs`` of the same parts), each its
    own line in a shared key and scale, plus a quieter ``distractor`` class entering early on.

    A one-part class draws from ``rng`` exactly as the demo always has, so its MIDI never changes.
    """
    programs = programs or CLASS_PROGRAMS[label]
    voices = _PART_VOICES.get(label) or (_VOICES[label],)
    if len(voices) != len(programs):
        raise ValueError(f"{label}: {len(programs)} programs for {len(voices)} parts")
    scale = _SCALES[int(rng.integers(len(_SCALES)))]
    key = int(rng.integers(12))
    volume = _SOLO_VOLUME if len(programs) == 1 else _ENSEMBLE_VOLUME
    midi = mido.MidiFile(ticks_per_beat=_TICKS_PER_BEAT)
    for channel, (program, voice) in enumerate(zip(programs, voices, strict=True)):
        if program == DRUMS:
            events, channel, program = _beat(seconds, rng), _DRUM_CHANNEL, 0  # standard kit
        else:
            events = _line(voice, scale, key, 0.02, seconds, rng, channel)
        midi.tracks.append(_track(events, program, channel, volume, int(rng.integers(40, 89))))
    if distractor is not None:
        d_rng = distractor_rng if distractor_rng is not None else rng
        start = float(d_rng.uniform(0.0, 0.4)) * seconds
        events = _line(_VOICES.get(distractor) or _PART_VOICES[distractor][0], scale, key, start, seconds,
                       d_rng, len(programs))  # fmt: skip
        volume = int(d_rng.integers(55, 80))  # CC 7 is about 40 log10(v/127) dB: 7-13 dB below a solo
        midi.tracks.append(
            _track(events, CLASS_PROGRAMS[distractor][0], len(programs), volume, int(d_rng.integers(20, 109)))
        )
    return midi


def _line(
    voice: _Voice, scale: tuple[int, ...], key: int, t: float, seconds: float, rng: np.random.Generator,
    channel: int,
) -> _Events:  # fmt: skip
    """One part's notes from ``t`` to ``seconds`` (a random walk over the scale within the voice's range)."""
    degrees = [12 * octave + key + step for octave in range(11) for step in scale]
    pitches = [p for p in degrees if voice.low <= p <= voice.high]
    pos = int(rng.integers(len(pitches) // 4, 3 * len(pitches) // 4 + 1))
    base_velocity = voice.velocity + int(rng.integers(-10, 11))
    events: _Events = []
    while t < seconds:
        length = float(rng.uniform(0.2, 0.6))
        if rng.random() < 0.07:  # a breath / rest
            t += float(rng.uniform(0.1, 0.3))
            continue
        pos = int(np.clip(pos + rng.choice([-3, -2, -1, -1, 0, 1, 1, 2, 3]), 0, len(pitches) - 1))
        velocity = int(np.clip(base_velocity + rng.normal(0, 12), 35, 125))
        _note(events, t, t + 0.95 * length, pitches[pos], velocity, channel)
        if rng.random() < voice.chord_prob:  # triad from the scale below the melody note
            for step in (2, 4):
                if pos - step >= 0:
                    _note(events, t, t + 0.95 * length, pitches[pos - step], max(30, velocity - 15), channel)
        t += length
    return events


def _beat(seconds: float, rng: np.random.Generator) -> _Events:
    """A rock beat on the GM kit at a random tempo: hi-hat eighths, kick on 1 and 3, snare on 2 and 4,
    a few extra kicks and crashes."""
    kick, snare, hat, crash = 36, 38, 42, 49
    eighth = 30.0 / float(rng.uniform(95, 140))
    base = int(rng.integers(85, 111))
    events: _Events = []
    _note(events, 0.02, 0.5, crash, base, _DRUM_CHANNEL)

    def vel(shift: int) -> int:
        return int(np.clip(base + shift + rng.normal(0, 8), 30, 127))

    t, k = 0.02, 0
    while t < seconds:
        pos = k % 8
        _note(events, t, t + 0.1, hat, vel(-25 if pos % 2 else -10), _DRUM_CHANNEL)
        if pos in (0, 4) or (pos == 5 and rng.random() < 0.35):
            _note(events, t, t + 0.1, kick, vel(0), _DRUM_CHANNEL)
        if pos in (2, 6):
            _note(events, t, t + 0.1, snare, vel(-5), _DRUM_CHANNEL)
        if pos == 0 and k and rng.random() < 0.15:
            _note(events, t, t + 0.5, crash, vel(-10), _DRUM_CHANNEL)
        t += eighth
        k += 1
    return events


def _track(events: _Events, program: int, channel: int, volume: int, pan: int) -> mido.MidiTrack:
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=_TEMPO_US, time=0))
    track.append(mido.Message("program_change", channel=channel, program=program, time=0))
    track.append(mido.Message("control_change", channel=channel, control=7, value=volume, time=0))
    track.append(mido.Message("control_change", channel=channel, control=10, value=pan, time=0))
    now = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1], e[2].note)):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=round(0.3 * _TICKS_PER_SECOND)))
    return track


def _extras(plan: _VideoPlan, spec: DemoSpec) -> _Extras:
    """This video's draws from its split's Degradation (always the same draws, in the same order)."""
    deg = _degradation(spec, plan.split)
    programs = (PROGRAM_VARIANTS if deg.variants else CLASS_PROGRAMS)[plan.label]
    if deg.clean or (not deg.noise_prob and not deg.distractor_prob):
        return _Extras(programs)
    rng = _rng(spec, plan.label, plan.index, _STREAM_EXTRAS)
    noisy, snr = rng.random() < deg.noise_prob, float(rng.uniform(*deg.snr_db))
    distracted, pick, cut = rng.random() < deg.distractor_prob, rng.random(), rng.random()
    # Another single-instrument class that is no part of this one (no violin over chamber music).
    mine = CLASS_PROGRAMS[plan.label]
    others = sorted(
        c for c, ps in CLASS_PROGRAMS.items() if len(ps) == 1 and c != plan.label and ps[0] not in mine
    )
    distractor = others[int(pick * len(others))] if distracted else None
    return _Extras(programs, snr if noisy else None, distractor, cut * deg.cutaways if distractor else 0.0)


def _finish_wav(path: Path, snr_db: float | None, rng: np.random.Generator) -> None:
    """Mix in background noise at ``snr_db`` (if any) and scale the mix below _PEAK, in place.

    The noise is pink (1/f power, as room tone and crowds roughly are), partly correlated between the
    channels and slowly swelling, so it is neither constant nor trivially filtered out.
    """
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    x = pcm.reshape(-1, params.nchannels)
    if snr_db is not None and len(x) > 1:
        n = len(x)
        freqs = np.fft.rfftfreq(n, 1.0 / params.framerate)
        shape = 1.0 / np.sqrt(np.maximum(freqs, 20.0))  # pink above 20 Hz, flat below
        common = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * shape, n)
        noise = np.stack(
            [common + 0.5 * np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * shape, n)
             for _ in range(params.nchannels)], axis=1,
        )  # fmt: skip
        t = np.arange(n) / params.framerate
        swell = 1.0 + 0.5 * np.sin(2 * np.pi * float(rng.uniform(0.05, 0.3)) * t + float(rng.uniform(0, 6.3)))
        noise *= swell[:, None]
        signal_rms = float(np.sqrt(np.mean(x**2)))
        noise *= signal_rms / max(float(np.sqrt(np.mean(noise**2))), 1e-12) * 10 ** (-snr_db / 20)
        x = x + noise
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > _PEAK:
        x = x * (_PEAK / peak)
    out = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setparams(params)
        w.writeframes(out.tobytes())


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
    for picture in _pictures(plan, spec, rng, _LOOKS[plan.label]):
        yield picture.tobytes()


def _pictures(
    plan: _VideoPlan, spec: DemoSpec, rng: np.random.Generator, look: _Look, clutter: float = 0.0
) -> Iterator[np.ndarray]:
    """The frames of :func:`_frames` as (h, w, 3) uint8 arrays, in ``look``; ``clutter`` widens the hue,
    saturation and brightness jitter (at 0 the draws are the demo's, value for value)."""
    w, h = spec.width, spec.height
    scale = min(w, h) / 240.0
    jitter = 8.0 + 22.0 * clutter  # from 1/8 of the 60-degree demo spacing to past half of a 30-degree one
    hue = (look.hue + rng.uniform(-jitter, jitter)) % 360 / 360
    sat = rng.uniform(0.55 - 0.3 * clutter, 0.9)
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
    flicker = rng.uniform(0.0, 0.08 + 0.15 * clutter)

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
        elif look.pattern == "holes":  # a short bar with a row of dark holes, wandering
            cx = cx0 + 0.25 * w * math.sin(0.6 * speed * t + phase)
            cy = cy0 + 0.15 * h * math.sin(0.9 * t)
            body = (np.abs(yy - cy) < 14 * size) & (np.abs(xx - cx) < 70 * size)
            holes = (np.abs(yy - cy) < 5 * size) & (((xx - cx + 70 * size) % (14 * size)) < 7 * size)
            mask = body & ~holes
        elif look.pattern == "eq":  # level bars rising and falling, like stage lights
            bar_w = 24 * size
            column = np.floor(xx[0] / bar_w)
            level = 0.3 + 0.45 * (1 + np.sin(2.3 * abs(speed) * t + 1.7 * column + phase)) / 2
            mask = ((xx % bar_w) < 0.7 * bar_w) & (yy > h * (1 - level)[None, :])
        elif look.pattern == "grid":  # rows of seats, the whole hall panning slowly
            pitch = 30 * size
            gx = (xx - 20 * speed * t) % pitch - pitch / 2
            gy = (yy - cy0 - 8 * scale * math.sin(0.5 * t + phase)) % pitch - pitch / 2
            mask = (gx**2 + gy**2 < (7 * size) ** 2) & (yy > 0.25 * h)
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
        yield np.where(mask[:, :, None], fg_u8, bg_u8)  # broadcasts to (h, w, 3) uint8


def _video_frames(plan: _VideoPlan, spec: DemoSpec, extras: _Extras) -> Iterator[bytes]:
    """The demo's frames, or under clutter / cut-aways: a run of frames showing the distractor's look (the
    camera turns to the other player), a grey occluder passing by, and sensor noise."""
    deg = _degradation(spec, plan.split)
    main_rng = _rng(spec, plan.label, plan.index, _STREAM_FRAMES)
    if not deg.clutter and not extras.cutaway:
        yield from _frames(plan, spec, main_rng)
        return
    main = _pictures(plan, spec, main_rng, _LOOKS[plan.label], deg.clutter)
    rng = _rng(spec, plan.label, plan.index, _STREAM_CLUTTER)
    n, w, h = plan.n_frames, spec.width, spec.height
    run = round(extras.cutaway * n)
    start = int(rng.integers(0, n - run + 1))
    cut = np.zeros(n, dtype=bool)
    cut[start : start + run] = True
    other = None
    if extras.distractor is not None and run:
        d_rng = _rng(spec, plan.label, plan.index, _STREAM_CUTAWAY)
        other = _pictures(plan, spec, d_rng, _LOOKS[extras.distractor], deg.clutter)
    occluded = rng.random() < deg.clutter
    ow, oh = int(rng.uniform(0.2, 0.4) * w), int(rng.uniform(0.35, 0.7) * h)
    ox, oy, ovx = rng.uniform(-0.3, 1.0) * w, rng.uniform(0.3, 1.0) * h - oh, rng.uniform(-25, 25)
    grey = int(rng.integers(20, 90))
    sigma = 18.0 * deg.clutter
    for k, picture in enumerate(main):
        cutaway = next(other) if other is not None else None
        frame = cutaway if cutaway is not None and cut[k] else picture
        if occluded:
            x0 = int(ox + ovx * k / spec.fps)
            y0 = max(0, int(oy))
            frame[y0 : y0 + oh, max(0, x0) : max(0, x0 + ow)] = grey
        if sigma:
            noisy = frame.astype(np.float32) + rng.normal(0.0, sigma, frame.shape).astype(np.float32)
            frame = np.clip(noisy, 0, 255).astype(np.uint8)
        yield frame.tobytes()


def _make_video(out: Path, plan: _VideoPlan, spec: DemoSpec, soundfont: Path) -> None:
    """Render audio, pipe frames into ffmpeg, mux to a temp name, then os.replace onto ``out``."""
    seconds = plan.n_frames / spec.fps
    extras = _extras(plan, spec)
    with tempfile.TemporaryDirectory(prefix="instrec-demo-") as tmp_dir:
        midi_path, wav_path = Path(tmp_dir) / "song.mid", Path(tmp_dir) / "song.wav"
        melody_rng = _rng(spec, plan.label, plan.index, _STREAM_MELODY)
        distractor_rng = _rng(spec, plan.label, plan.index, _STREAM_DISTRACTOR)
        song = _song(plan.label, seconds, melody_rng, extras.programs, extras.distractor, distractor_rng)
        song.save(str(midi_path))
        _render_wav(midi_path, wav_path, soundfont)
        if extras.snr_db is not None or extras.distractor is not None or len(extras.programs) > 1:
            _finish_wav(wav_path, extras.snr_db, _rng(spec, plan.label, plan.index, _STREAM_NOISE))

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
                frames = _video_frames(plan, spec, extras)
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
