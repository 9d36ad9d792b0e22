"""The whole asset graph, materialised with Dagster for a tiny real dataset, checked against the data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance

from instrec_pipeline.cli import materialize_dataset
from instrec_pipeline.datasets.manifest import SPLITS
from instrec_pipeline.layout import Layout


@pytest.fixture(scope="module")
def materialised(
    tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Layout, DagsterInstance]:
    root = tmp_path_factory.mktemp("store")
    instance = DagsterInstance.ephemeral()
    materialize_dataset("tiny", root, instance)
    return Layout(root), instance


def test_every_asset_materialised_for_every_partition(materialised: tuple[Layout, DagsterInstance]) -> None:
    from dagster import AssetKey

    _, instance = materialised
    for name in ("manifest", "raw_videos", "demux", "log_mel", "frame_embeddings"):
        keys = instance.get_materialized_partitions(AssetKey(name))
        assert {f"tiny|{s}" for s in SPLITS} <= set(keys), name
    for name in (
        "audio_model_han",
        "audio_model_choi",
        "audio_model_xception",
        "video_model",
        "fusion_model",
        "evaluation_report",
    ):
        assert "tiny" in instance.get_materialized_partitions(AssetKey(name)), name


def test_features_match_the_videos(materialised: tuple[Layout, DagsterInstance], tiny_dataset: Path) -> None:
    layout, _ = materialised
    manifest = pd.read_csv(tiny_dataset)
    for split in SPLITS:
        ids = set(manifest.loc[manifest["split"] == split, "video_id"])
        frames = layout.features.modality("tiny", split, "frames")
        emb = layout.features.modality("tiny", split, "embeddings")
        mel = layout.features.modality("tiny", split, "logmel_choi")
        assert set(frames.video_ids) == set(emb.video_ids) == set(mel.video_ids) == ids
        assert frames.lengths() == emb.lengths()  # one embedding per frame
        for v, n in frames.lengths().items():
            assert 3 <= n <= 4, v  # 3–4 s videos at 1 fps
        for v, n in mel.lengths().items():  # 12 kHz, hop 256 → ~47 frames per second
            assert 3 * 46 <= n <= 4 * 47 + 1, v


def test_report_comes_from_the_data(materialised: tuple[Layout, DagsterInstance]) -> None:
    layout, instance = materialised
    summary = pd.read_csv(layout.report_dir("tiny") / "summary.csv").set_index("model")
    assert set(summary.index) >= {
        "choi",
        "video",
        "fusion",
        "score_average",
        "fusion_no_audio",
        "fusion_no_video",
    }
    assert (summary["n"] == 6).all()
    # Three clearly different instruments: the audio model is far above chance (1/3).
    assert summary.loc["choi", "hit1"] >= 0.66
    assert (layout.report_dir("tiny") / "confusion_choi.png").stat().st_size > 1000
    from dagster import AssetKey

    event = instance.get_latest_materialization_event(AssetKey("evaluation_report"))
    md = event.asset_materialization.metadata["report"].value
    assert "data:image/png;base64," in md and "Hit@1" in md


def test_predict_a_new_video(materialised: tuple[Layout, DagsterInstance], tiny_dataset: Path) -> None:
    from instrec_pipeline.predict import format_prediction, predict_video

    layout, _ = materialised
    manifest = pd.read_csv(tiny_dataset)
    row = manifest[manifest["split"] == "test"].iloc[0]
    pred = predict_video(tiny_dataset.parent / row["source"], layout, "tiny", "cpu")
    assert set(pred.probs.index) == {"audio: han", "audio: choi", "audio: xception", "video", "score average",
                                     "fusion"}  # fmt: skip
    assert list(pred.probs.columns) == ["flute", "guitar", "trumpet"]
    assert abs(pred.probs.sum(axis=1) - 1).max() < 1e-4
    text = format_prediction(pred)
    assert "fusion" in text and "%" in text
