"""Bad settings and names are reported where they are, with why; the rest keeps working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from instrec_pipeline.datasets import registry
from instrec_pipeline.defs.resources import ComputeResource, ExtractionResource, MediaResource
from instrec_pipeline.settings import CheckSettings, ExecutorSettings, ReextractionSettings, StoreSettings
from instrec_pipeline.store.atomic import atomic_write

REPO = Path(__file__).resolve().parents[1]


def test_a_malformed_datasets_file_leaves_the_other_datasets(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("video_id,source,label\nv1,a.mp4,a\nv2,b.mp4,b\n")
    path = tmp_path / "datasets.yaml"
    path.write_text(
        "datasets:\n"
        "  good: {manifest: m.csv}\n"
        "  nomanifest: {classes: [a]}\n"
        "  typo: {manifest: m.csv, clases: [a]}\n"
        "  '../../escape': {manifest: m.csv}\n"
        "  demo: {manifest: m.csv}\n"
        "  badtype: {manifest: m.csv, multilabel: maybe}\n"
    )
    specs, problems = registry._user_specs(path, {"demo", "fcvid", "yt8m"})
    assert list(specs) == ["good"] and specs["good"].classes == ("a", "b")
    assert specs["good"].media_root == tmp_path  # relative to the file
    text = "\n".join(problems)
    assert f"{path}: dataset 'nomanifest': field manifest: Field required" in text
    assert "dataset 'typo': field clases: Extra inputs are not permitted" in text
    assert "dataset '../../escape': bad name" in text
    assert "dataset 'demo': bad name (a built-in dataset's name)" in text
    assert "dataset 'badtype': field multilabel" in text
    assert len(problems) == 5


def test_an_unreadable_datasets_file_is_one_message(tmp_path: Path) -> None:
    path = tmp_path / "datasets.yaml"
    path.write_text("datasets: [unclosed\n")
    specs, problems = registry._user_specs(path, set())
    assert specs == {} and len(problems) == 1 and str(path) in problems[0]


def test_the_code_location_loads_despite_bad_settings_and_datasets(tmp_path: Path) -> None:
    """A bad ``INSTREC_MAX_FAILED_RATIO`` and datasets file: definitions still load; the CLI says why."""
    path = tmp_path / "datasets.yaml"
    path.write_text("datasets:\n  broken: {classes: [a]}\n")
    env = {**os.environ, "INSTREC_DATASETS": str(path), "INSTREC_MAX_FAILED_RATIO": "abc",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    code = "from instrec_pipeline.definitions import defs; print(len(list(defs().assets)))"
    loaded = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-1000:]
    listing = subprocess.run([sys.executable, "-m", "instrec_pipeline.cli", "datasets"], env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert listing.returncode == 1 and "demo:" in listing.stdout
    assert "dataset 'broken': field manifest: Field required" in listing.stderr


def test_environment_settings_are_parsed_with_a_clear_message() -> None:
    assert CheckSettings.read({}).max_failed_ratio == 0.2
    assert CheckSettings.read({"INSTREC_MAX_FAILED_RATIO": "0.5"}).max_failed_ratio == 0.5
    for bad in ("abc", "1.5", "-0.1"):
        with pytest.raises(ValueError, match=f"INSTREC_MAX_FAILED_RATIO='{bad}'"):
            CheckSettings.read({"INSTREC_MAX_FAILED_RATIO": bad})
    with pytest.raises(ValueError, match="INSTREC_REEXTRACT_CRON='3am': .*5 fields"):
        ReextractionSettings.read({"INSTREC_REEXTRACT_CRON": "3am"})


def test_settings_keep_their_defaults_and_are_read_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults as the README documents them; a changed variable counts from the next call (no import-time
    copies); a bad value for one group (the check threshold) leaves the others readable."""
    assert ExecutorSettings.read({}).executor == "in_process"
    assert ExecutorSettings.read({}).backend == "redis://localhost:6379/0"
    given = ExecutorSettings.read({"INSTREC_EXECUTOR": "Celery", "INSTREC_CELERY_BROKER": "redis://b:1/0"})
    assert (given.executor, given.backend) == ("celery", "redis://b:1/0")
    schedule = ReextractionSettings.read({})
    assert schedule.cron == "0 3 * * *" and schedule.datasets == ()
    named = ReextractionSettings.read({"INSTREC_REEXTRACT_DATASETS": " demo, tiny ,"})
    assert named.datasets == ("demo", "tiny")
    monkeypatch.setenv("INSTREC_HOME", "/srv/instrec")
    monkeypatch.setenv("INSTREC_MAX_FAILED_RATIO", "abc")
    assert StoreSettings.read().root == Path("/srv/instrec")
    monkeypatch.delenv("INSTREC_HOME")
    assert StoreSettings.read().root == Path("data").resolve()


def test_the_manifests_are_observed_on_the_cron_of_the_settings_for_the_named_datasets() -> None:
    """The observation's condition comes from the settings read when the code location loads: the cron,
    and only the named datasets' partitions (the paper's lists are left out unless named)."""
    from datetime import datetime

    import dagster as dg

    from instrec_pipeline.defs.automation.declarative import manifest_file
    from instrec_pipeline.defs.resources import StoreResource

    settings = ReextractionSettings.read({"INSTREC_REEXTRACT_CRON": "15 1 * * 0",
                                          "INSTREC_REEXTRACT_DATASETS": "tiny"})  # fmt: skip
    source = manifest_file(settings)
    defs = dg.Definitions(assets=[source], resources={"store": StoreResource()})
    instance = dg.DagsterInstance.ephemeral()
    before = dg.evaluate_automation_conditions(defs, instance, evaluation_time=datetime(2026, 11, 29, 1, 0))
    assert before.total_requested == 0  # Sunday 01:00: the tick has not passed
    after = dg.evaluate_automation_conditions(defs, instance, cursor=before.cursor,
                                              evaluation_time=datetime(2026, 11, 29, 1, 20))  # fmt: skip
    assert after.get_requested_partitions(source.key) == {"tiny|train", "tiny|val", "tiny|test"}
    default = manifest_file(ReextractionSettings.read({}))
    assert "'0 3 * * *'" in (default.description or "") and "fcvid" not in (default.description or "")
    assert "demo" in (default.description or "")


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [(MediaResource, "retries", -1), (ComputeResource, "batch_size", 0), (ComputeResource, "workers", -1),
     (MediaResource, "timeout_s", 0), (ExtractionResource, "fps", 0), (ExtractionResource, "crop", -1),
     (MediaResource, "max_bytes", 0)],
)  # fmt: skip
def test_resource_fields_are_bounded(cls: type, field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        cls(**{field: value})


def test_compute_settings_reach_the_workers_and_the_trainers() -> None:
    """``workers: 0`` is one ffmpeg per usable core; ``compute.precision`` reaches every model's training
    config, while ``auto`` keeps what the dataset's ``training:`` says."""
    from dataclasses import replace

    from instrec_pipeline.defs.assets.models import TrainConfig, _configured
    from instrec_pipeline.parallel import demux_plan, usable_cores
    from instrec_pipeline.training.audio import AudioTrainConfig
    from instrec_pipeline.training.fusion import FusionTrainConfig

    assert ComputeResource().pool_size == demux_plan().workers == usable_cores()
    assert ComputeResource(workers=3).pool_size == 3
    for base, kind in ((AudioTrainConfig(), "audio"), (FusionTrainConfig(), "fusion")):
        assert _configured(base, "tiny", kind, TrainConfig(), "bf16").precision == "bf16"
        assert _configured(base, "tiny", kind, TrainConfig(), "fp32").precision == "fp32"
        assert _configured(replace(base, precision="fp32"), "tiny", kind, TrainConfig()).precision == "fp32"


def test_frame_readers_leave_the_cpu_to_the_network_and_feed_a_gpu() -> None:
    """One reader on the CPU (the network's streams use every core); on a GPU one per spare core, up to 4."""
    from instrec_pipeline.parallel import frame_readers

    assert [frame_readers("cpu", cores) for cores in (1, 2, 16)] == [1, 1, 1]
    assert [frame_readers("cuda", cores) for cores in (1, 2, 3, 16)] == [1, 1, 2, 4]


def test_loader_workers_stay_off_the_cpu_and_feed_a_gpu() -> None:
    """No DataLoader process on the CPU (reading is ~1 % of a step there; workers take the model's cores);
    beside a GPU one per spare core, up to 4. A setting overrides either."""
    import torch

    from instrec_pipeline.parallel import loader_workers
    from instrec_pipeline.training.loop import TrainSettings

    assert [loader_workers("cpu", cores) for cores in (1, 2, 16)] == [0, 0, 0]
    assert [loader_workers("cuda", cores) for cores in (1, 2, 3, 16)] == [0, 1, 2, 4]
    assert TrainSettings().workers(torch.device("cpu")) == 0
    assert TrainSettings(loader_workers=3).workers(torch.device("cpu")) == 3


def test_the_frames_decoder_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from instrec_pipeline.media import torchcodec_frames

    assert ExtractionResource().demux_params((12000,), device="cuda").frames_decoder == "ffmpeg"
    monkeypatch.setattr(torchcodec_frames, "available", lambda: True)
    chosen = ExtractionResource(decoder="torchcodec")
    assert chosen.demux_params((12000,), device="cuda").frames_decoder == "torchcodec/cuda"
    assert chosen.demux_params((12000,)).frames_decoder == "torchcodec/cpu"
    monkeypatch.setattr(torchcodec_frames, "available", lambda: False)
    with pytest.raises(ValueError, match=r"pip install -e '\.\[torchcodec\]'"):
        chosen.demux_params((12000,))


def test_atomic_write_never_leaves_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    atomic_write(target, lambda fh: fh.write(b"old"))

    def crash(fh: object) -> None:
        fh.write(b"half")  # type: ignore[attr-defined]
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert target.stat().st_mode & 0o777 == 0o644
