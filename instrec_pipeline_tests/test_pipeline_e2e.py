"""The whole asset graph, materialised with Dagster for a tiny real dataset, checked against the data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from dagster import DagsterInstance

from instrec_pipeline.datasets.manifest import SPLITS
from instrec_pipeline.store.layout import Layout
from instrec_pipeline.training.loop import load_checkpoint


def test_every_asset_materialised_for_every_partition(materialised: tuple[Layout, DagsterInstance]) -> None:
    from dagster import AssetKey

    from instrec_pipeline.cli import TRAINING
    from instrec_pipeline.defs.jobs import EXTRACTION_ASSETS

    _, instance = materialised
    for name in EXTRACTION_ASSETS:
        keys = instance.get_materialized_partitions(AssetKey(name))
        assert {f"tiny|{s}" for s in SPLITS} <= set(keys), name
    for name in TRAINING:
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
    # Leak-free fusion: three cross-fitted pairs, each trained without its third of train; the in-sample
    # fusion (the paper's) stays as a comparison row.
    assert "fusion_insample" in summary.index
    fusion = load_checkpoint(layout.model("tiny", "fusion"))["meta"]
    assert fusion["config"]["inputs"] == "oof" and len(fusion["members"]) == 3
    train_ids = set(pd.read_csv(layout.table("tiny", "train", "manifest"))["video_id"])
    assert fusion["n_train_videos"] == len(train_ids)
    for tag in fusion["members"]:
        member = load_checkpoint(layout.model("tiny", tag + "audio_choi"))["meta"]
        assert member["n_train_videos"] < len(train_ids)
    # The video head's rate was chosen on val among those configured, and the choice is recorded.
    video = load_checkpoint(layout.model("tiny", "video"))["meta"]
    assert set(video["tuning"]) == {"lr=0.001", "lr=0.01"}
    assert video["config"]["lr"] in (0.001, 0.01)
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
    assert set(pred.probs.index) == {"audio: han", "audio: choi", "audio: choi_icmr", "audio: xception",
                                     "video", "score average", "fusion"}  # fmt: skip
    assert list(pred.probs.columns) == ["flute", "guitar", "trumpet"]
    assert abs(pred.probs.sum(axis=1) - 1).max() < 1e-4
    text = format_prediction(pred)
    assert "fusion" in text and "%" in text


def test_asset_checks_ran_and_passed(materialised: tuple[Layout, DagsterInstance]) -> None:
    from dagster import AssetCheckKey, AssetKey

    _, instance = materialised
    expected = {
        "manifest": ["train_split_covers_every_class"],
        "demux": ["videos_accounted_for", "modalities_hold_the_same_videos", "frames_and_audio_agree"],
        "log_mel": ["log_mel_shapes_and_values"],
        "frame_embeddings": ["embeddings_shapes_and_values"],
    }
    for asset, names in expected.items():
        for name in names:
            records = instance.event_log_storage.get_asset_check_execution_history(
                AssetCheckKey(AssetKey(asset), name), limit=10
            )
            assert len(records) == 3, (asset, name)  # one per split
            for record in records:
                evaluation = record.event.dagster_event.event_specific_data
                assert evaluation.passed, (asset, name, evaluation.description)


def test_unchanged_rerun_does_next_to_no_work(materialised: tuple[Layout, DagsterInstance]) -> None:
    from dagster import AssetKey, materialize

    from instrec_pipeline.definitions import defs
    from instrec_pipeline.defs.jobs import EXTRACTION_ASSETS
    from instrec_pipeline.defs.resources import StoreResource

    layout, instance = materialised
    loaded = defs()
    result = materialize(
        list(loaded.assets), selection=EXTRACTION_ASSETS, partition_key="tiny|val", instance=instance,
        resources={**loaded.resources, "store": StoreResource(root=str(layout.root))},
    )  # fmt: skip
    assert result.success
    meta = {a: result.asset_materializations_for_node(a)[0].metadata for a in ("demux", "frame_embeddings")}
    assert meta["demux"]["processed"].value == 0 and meta["demux"]["skipped"].value == 6
    assert meta["frame_embeddings"]["processed"].value == 0
    log_mel = result.asset_materializations_for_node("log_mel")[0].metadata
    assert log_mel["choi_processed"].value == log_mel["han_processed"].value == 0
    events = instance.fetch_materializations(AssetKey("demux"), limit=100).records
    assert (
        len(
            {
                e.asset_materialization.tags.get("dagster/data_version")
                for e in events
                if e.partition_key == "tiny|val"
            }
        )
        == 1
    )  # fmt: skip - unchanged data, unchanged version


def test_finetuning_inception_feeds_the_video_model(
    materialised: tuple[Layout, DagsterInstance], tiny_dataset: Path, tmp_path: Path
) -> None:
    """The flag's whole path on CPU (one short epoch), on a copy of the store that other tests never see."""
    import shutil

    import torch

    from instrec_pipeline.features.partition import inception_weights_of
    from instrec_pipeline.features.visual import load_inception
    from instrec_pipeline.predict import predict_video
    from instrec_pipeline.training.finetune import FINETUNED_EMBEDDINGS
    from instrec_pipeline.training.runs import Unimodal, train_and_save_video
    from instrec_pipeline.training.video import VideoTrainConfig
    from instrec_pipeline_tests.conftest import TINY_CLASSES

    shutil.copytree(materialised[0].root, tmp_path / "store")
    layout = Layout(tmp_path / "store")
    cfg = VideoTrainConfig(k=4, lr=0.01, max_epochs=3, patience=2, batch_size=8, finetune=True,
                           finetune_epochs=1, finetune_k=2)  # fmt: skip
    meta = train_and_save_video(layout, "tiny", list(TINY_CLASSES), cfg, torch.device("cpu"))
    assert meta["embeddings"] == FINETUNED_EMBEDDINGS and len(meta["finetune_history"]["train_loss"]) == 1

    # Only the last blocks moved; the saved backbone is a plain Inception v3 the extractor can load.
    start, _ = load_inception(
        *inception_weights_of(layout.features.modality("tiny", "train", "embeddings").params)
    )
    tuned, loaded = load_inception(meta["inception_weights"])
    assert loaded.kind == "file"
    a, b = start.state_dict(), tuned.state_dict()
    assert torch.equal(a["Conv2d_1a_3x3.conv.weight"], b["Conv2d_1a_3x3.conv.weight"])
    assert not torch.equal(a["Mixed_7c.branch1x1.conv.weight"], b["Mixed_7c.branch1x1.conv.weight"])

    # Every split re-embedded with those weights; the plain embeddings are untouched.
    for split in SPLITS:
        frames = layout.features.modality("tiny", split, "frames")
        tuned_emb = layout.features.modality("tiny", split, FINETUNED_EMBEDDINGS)
        assert tuned_emb.lengths() == frames.lengths()
        assert tuned_emb.params["weights_digest"] == loaded.digest
        assert layout.features.modality("tiny", split, "embeddings").params["weights"] == "random"

    # Evaluation, fusion and prediction read the fine-tuned features through the video checkpoint.
    uni = Unimodal.load(layout, "tiny", "choi", torch.device("cpu"))
    assert uni.embeddings == FINETUNED_EMBEDDINGS
    manifest = pd.read_csv(tiny_dataset)
    row = manifest[manifest["split"] == "test"].iloc[0]
    pred = predict_video(tiny_dataset.parent / row["source"], layout, "tiny", "cpu")
    assert abs(pred.probs.loc["video"].sum() - 1) < 1e-4


def test_extraction_reports_progress_and_plottable_figures(
    materialised: tuple[Layout, DagsterInstance],
) -> None:
    """Long steps log done/total, rate and ETA; their metadata carries numbers the UI plots over runs, and
    each model's the share of its training spent waiting for input."""
    from dagster import AssetKey

    _, instance = materialised
    for name in ("raw_videos", "demux", "frame_embeddings"):
        event = instance.get_latest_materialization_event(AssetKey(name))
        meta = event.asset_materialization.metadata
        for key in ("videos_per_s", "elapsed_s", "dagster/row_count"):
            assert isinstance(meta[key].value, int | float), (name, key)
        assert meta["dagster/row_count"].value > 0
    logs = [e.user_message for run in instance.get_runs() for e in instance.all_logs(run.run_id)]
    assert any("videos/s" in m and "demux tiny|" in m for m in logs), "no progress line in the run's logs"
    for name in ("audio_model_choi", "video_model"):  # how long training waited for its input, of its time
        meta = instance.get_latest_materialization_event(AssetKey(name)).asset_materialization.metadata
        assert 0 <= meta["input_wait_seconds"].value <= meta["train_seconds"].value, name


def test_predict_cli_says_what_is_wrong_per_file(
    materialised: tuple[Layout, DagsterInstance], tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    """A bad video, a missing one and a bad checkpoint: one line each on stderr, exit 1, no traceback."""
    import pytest

    from instrec_pipeline.cli import main

    layout, _ = materialised
    manifest = pd.read_csv(tiny_dataset)
    good = tiny_dataset.parent / manifest[manifest["split"] == "test"].iloc[0]["source"]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(good), str(bad), str(tmp_path / "nope.mp4"), "--dataset", "tiny",
              "--root", str(layout.root), "--device", "cpu"])  # fmt: skip
    out, err = capsys.readouterr()
    assert stop.value.code == 1
    assert "fusion" in out  # the good video was still predicted
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert lines[0].startswith(f"instrec predict: {bad}: ") and lines[1].startswith("instrec predict: ")
    assert "nope.mp4" in lines[1] and "no such file" in lines[1]
    broken = tmp_path / "store"
    (broken / "models" / "tiny").mkdir(parents=True)
    (broken / "models" / "tiny" / "fusion.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(SystemExit):
        main(["predict", str(good), "--dataset", "tiny", "--root", str(broken), "--device", "cpu"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot use the trained models of 'tiny'" in err
