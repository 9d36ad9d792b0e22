"""The generated demo dataset must look like real user videos to the rest of the pipeline: real mp4
containers (h264 + aac), audible instrument audio, classes that differ visually, and a cheap, idempotent,
deterministic build."""

from __future__ import annotations

import csv
import dataclasses
import shutil
import time
from pathlib import Path

import ffmpeg
import numpy as np
import pytest

from instrec_pipeline.datasets import demo
from instrec_pipeline.datasets.demo import DEMO_CLASSES, GM_PROGRAMS, DemoSpec, find_soundfont, generate_demo


def _have_tools() -> bool:
    try:
        find_soundfont()
    except FileNotFoundError:
        return False
    return all(shutil.which(tool) for tool in ("fluidsynth", "ffmpeg", "ffprobe"))


pytestmark = pytest.mark.skipif(not _have_tools(), reason="needs fluidsynth, ffmpeg and a GM soundfont")

TINY = DemoSpec(classes=("flute", "guitar"), videos_per_class=3, min_seconds=2.0, max_seconds=3.0, seed=7)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    root = tmp_path_factory.mktemp("demo")
    manifest = generate_demo(root, TINY)
    with manifest.open(newline="") as f:
        return root, list(csv.DictReader(f))


def _pcm(path: Path) -> np.ndarray:
    out, _ = ffmpeg.input(str(path)).output("pipe:", format="s16le", ac=1, ar=22050).run(quiet=True)
    return np.frombuffer(out, np.int16).astype(np.float32) / 32768.0


def _mean_rgb(path: Path, at: float) -> np.ndarray:
    out, _ = (
        ffmpeg.input(str(path), ss=at)
        .output("pipe:", format="rawvideo", pix_fmt="rgb24", vframes=1)
        .run(quiet=True)
    )
    return np.frombuffer(out, np.uint8).reshape(TINY.height, TINY.width, 3).reshape(-1, 3).mean(axis=0)


def test_constants() -> None:
    assert DEMO_CLASSES == ("accordion", "flute", "guitar", "piano", "trumpet", "violin")
    assert set(GM_PROGRAMS) == set(DEMO_CLASSES)
    assert GM_PROGRAMS["piano"] == 0 and GM_PROGRAMS["violin"] == 40 and GM_PROGRAMS["guitar"] in (24, 25)


def test_manifest(tiny: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = tiny
    assert (root / "manifest.csv").read_text().splitlines()[0] == "video_id,source,label,split"
    assert len(rows) == 6
    assert len({r["video_id"] for r in rows}) == 6
    for label in TINY.classes:
        mine = [r for r in rows if r["label"] == label]
        assert sorted(r["split"] for r in mine) == ["test", "train", "val"]
        assert sorted(r["video_id"] for r in mine) == [f"{label}_{i:03d}" for i in range(3)]
    for r in rows:
        assert r["source"] == f"media/{r['video_id']}.mp4"  # relative to root, portable
        assert (root / r["source"]).is_file()


def test_real_mp4_with_h264_and_aac(tiny: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = tiny
    for r in rows:
        info = ffmpeg.probe(str(root / r["source"]))
        assert "mp4" in info["format"]["format_name"]
        kinds = {s["codec_type"]: s for s in info["streams"]}
        assert kinds["video"]["codec_name"] == "h264"
        assert (kinds["video"]["width"], kinds["video"]["height"]) == (TINY.width, TINY.height)
        assert kinds["audio"]["codec_name"] == "aac"
        duration = float(info["format"]["duration"])
        assert TINY.min_seconds - 0.05 <= duration <= TINY.max_seconds + 0.05
        for stream in ("video", "audio"):  # -shortest + apad: both tracks span the video
            assert float(kinds[stream]["duration"]) == pytest.approx(duration, abs=0.1)


def test_audio_is_not_silent(tiny: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = tiny
    for r in rows:
        pcm = _pcm(root / r["source"])
        assert float(np.sqrt(np.mean(pcm**2))) > 0.005, r["video_id"]
        assert float(np.abs(pcm).max()) < 0.99, r["video_id"]  # and not clipped


def test_classes_differ_visually(tiny: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = tiny
    means = {
        r["video_id"]: np.mean([_mean_rgb(root / r["source"], t) for t in (0.5, 1.5)], axis=0) for r in rows
    }
    centre = {
        label: np.mean([m for vid, m in means.items() if vid.startswith(label)], axis=0)
        for label in TINY.classes
    }
    between = float(np.linalg.norm(centre["flute"] - centre["guitar"]))
    within = max(float(np.linalg.norm(m - centre[vid.rsplit("_", 1)[0]])) for vid, m in means.items())
    assert between > 40 and between > 2 * within, (between, within)
    # videos of one class are not copies of each other
    flute = [m for vid, m in means.items() if vid.startswith("flute")]
    assert np.linalg.norm(flute[0] - flute[1]) > 0.5


def test_second_call_is_cheap_and_rewrites_nothing(tiny: tuple[Path, list[dict[str, str]]]) -> None:
    root, _ = tiny
    files = sorted(p for p in root.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    started = time.perf_counter()
    manifest = generate_demo(root, TINY)
    assert time.perf_counter() - started < 1.0
    assert manifest == root / "manifest.csv"
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert not list((root / "media").glob(".*"))  # no temp debris left behind


def test_deterministic_resumable_and_spec_keyed(tmp_path: Path) -> None:
    spec = DemoSpec(classes=("piano",), videos_per_class=2, min_seconds=1.5, max_seconds=2.0, seed=3)
    a, b = tmp_path / "a", tmp_path / "b"
    generate_demo(a, spec)
    generate_demo(b, spec)
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    assert np.array_equal(_pcm(a / "media/piano_000.mp4"), _pcm(b / "media/piano_000.mp4"))

    # resume: only the missing video is rebuilt
    kept = a / "media/piano_000.mp4"
    kept_mtime = kept.stat().st_mtime_ns
    (a / "media/piano_001.mp4").unlink()
    generate_demo(a, spec)
    assert (a / "media/piano_001.mp4").is_file() and kept.stat().st_mtime_ns == kept_mtime

    # another spec in the same root rebuilds everything
    generate_demo(a, dataclasses.replace(spec, seed=4))
    assert not np.array_equal(_pcm(a / "media/piano_000.mp4"), _pcm(b / "media/piano_000.mp4"))


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="subset"):
        DemoSpec(classes=("kazoo",))
    with pytest.raises(ValueError, match="even"):
        DemoSpec(width=321)
    with pytest.raises(ValueError):
        DemoSpec(min_seconds=5.0, max_seconds=2.0)


def test_find_soundfont(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sf = tmp_path / "custom.sf2"
    sf.write_bytes(b"RIFF")
    monkeypatch.setenv("INSTREC_SOUNDFONT", str(sf))
    assert find_soundfont() == sf
    monkeypatch.delenv("INSTREC_SOUNDFONT")
    monkeypatch.setattr(demo, "_SOUNDFONT_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install fluidsynth fluid-soundfont-gm"):
        find_soundfont()


def test_broken_soundfont_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # fluidsynth exits 0 on an unreadable soundfont and falls back to its default one: must not pass.
    junk = tmp_path / "junk.sf2"
    junk.write_bytes(b"not a soundfont")
    monkeypatch.setenv("INSTREC_SOUNDFONT", str(junk))
    spec = DemoSpec(classes=("violin",), videos_per_class=1, min_seconds=1.0, max_seconds=1.0)
    with pytest.raises(RuntimeError, match="fluidsynth"):
        generate_demo(tmp_path / "out", spec)
    assert not (tmp_path / "out/manifest.csv").exists()
    assert not list((tmp_path / "out/media").iterdir())
