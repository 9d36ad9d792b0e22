"""Shapes, parameter budgets, modality dropping and train/eval behaviour of ``instrec_pipeline.models``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from instrec_pipeline.models import (
    AUDIO_INPUTS,
    AUDIO_MODELS,
    AudioInput,
    ChoiICMRNet,
    ChoiNet,
    FrameClassifier,
    HanNet,
    LateFusionNet,
    XceptionAudio,
)

N_CLASSES = 12  # FCVID, the count the paper's parameter budgets are quoted for
UC_FRAMES = 137  # a 2.912 s segment at Choi's 12 kHz / hop 256


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "paper"), [("han", 1.5e6), ("choi", 2.4e6), ("xception", 9.6e6)])
def test_parameter_count_matches_paper(name: str, paper: float) -> None:
    count = n_params(AUDIO_MODELS[name](N_CLASSES))
    assert abs(count - paper) / paper <= 0.15, f"{name}: {count:,} vs paper {paper:,.0f}"


def test_xception_768_width_also_within_budget() -> None:
    assert abs(n_params(XceptionAudio(N_CLASSES, middle_channels=768)) - 9.6e6) / 9.6e6 <= 0.15


def test_registry_and_inputs() -> None:
    assert dict(AUDIO_MODELS) == {
        "han": HanNet,
        "choi": ChoiNet,
        "choi_icmr": ChoiICMRNet,
        "xception": XceptionAudio,
    }
    assert AUDIO_INPUTS["han"] == AudioInput(128, 43, 22050, 1024, 512)
    assert AUDIO_INPUTS["choi"] == AudioInput(96, 1366, 12000, 512, 256)
    assert AUDIO_INPUTS["xception"] == AUDIO_INPUTS["choi"] == AUDIO_INPUTS["choi_icmr"]
    assert AUDIO_INPUTS["choi"].frames_for(2.912) == UC_FRAMES
    assert AUDIO_INPUTS["choi"].frames_for(29.12) == 1366
    with pytest.raises(AttributeError):
        AUDIO_INPUTS["han"].n_mels = 64  # type: ignore[misc]


def test_han_shapes_at_nominal_input() -> None:
    spec = AUDIO_INPUTS["han"]
    model = HanNet(N_CLASSES).eval()
    x = torch.randn(2, 1, spec.n_mels, spec.frames)
    with torch.no_grad():
        logits, emb = model(x), model.embed(x)
    assert logits.shape == (2, N_CLASSES)
    assert emb.shape == (2, model.embedding_dim) == (2, 1024)
    torch.testing.assert_close(model.classifier(emb), logits)  # embed is what the classifier sees


@pytest.mark.parametrize("name", ["choi", "xception"])
@pytest.mark.parametrize(("batch", "frames"), [(1, 1366), (2, UC_FRAMES)])  # CC (29.12 s) and a UC segment
def test_choi_input_models_take_cc_and_uc_lengths(name: str, batch: int, frames: int) -> None:
    model = AUDIO_MODELS[name](N_CLASSES).eval()
    assert AUDIO_INPUTS[name].n_mels == 96
    x = torch.randn(batch, 1, 96, frames)
    with torch.no_grad():
        logits, emb = model(x), model.embed(x)
    assert logits.shape == (batch, N_CLASSES)
    assert emb.shape == (batch, model.embedding_dim) == (batch, 1024)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(model.classifier(emb), logits)  # embed is what the classifier sees


def test_frame_classifier_shapes() -> None:
    model = FrameClassifier(N_CLASSES).eval()
    assert model.embedding_dim == 1024
    with torch.no_grad():
        assert model(torch.randn(4, 2048)).shape == (4, N_CLASSES)
        frames = torch.randn(3, 5, 2048)
        per_frame = model(frames)
        assert per_frame.shape == (3, 5, N_CLASSES)
        assert model.embed(frames).shape == (3, 5, 1024)
        video = model.video_logits(frames)
        assert video.shape == (3, N_CLASSES)
        # softmax of the video logits is the mean of the frame probabilities
        torch.testing.assert_close(video.softmax(-1), per_frame.softmax(-1).mean(1))
        torch.testing.assert_close(model.video_logits(frames, average="logit"), per_frame.mean(1))


def test_frame_classifier_mask_and_linear_variant() -> None:
    model = FrameClassifier(N_CLASSES, hidden_dims=(512, 256)).eval()
    assert model.embedding_dim == 256
    frames = torch.randn(2, 4, 2048)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    with torch.no_grad():
        masked = model.video_logits(frames, mask=mask)
        torch.testing.assert_close(masked[0], model.video_logits(frames[:1, :2])[0])
        torch.testing.assert_close(masked[1], model.video_logits(frames[1:])[0])
    linear = FrameClassifier(N_CLASSES, hidden_dims=())
    assert linear.embedding_dim == 2048 and n_params(linear) == 2048 * N_CLASSES + N_CLASSES


def _fusion(**kw: int) -> LateFusionNet:
    args = {"video_dim": 256, "audio_dim": 96, "n": 128, "k": 3, "hidden": 64} | kw
    return LateFusionNet(N_CLASSES, **args)


def test_fusion_shapes_and_missing_modalities() -> None:
    model = _fusion().eval()
    video, audio = torch.randn(4, 3, 256), torch.randn(4, 96)
    with torch.no_grad():
        assert model(video, audio).shape == (4, N_CLASSES)
        assert model(video, None).shape == (4, N_CLASSES)
        assert model(None, audio).shape == (4, N_CLASSES)
        assert model.embed(video, audio).shape == (4, model.embedding_dim) == (4, 64)
        assert model.stack(video, audio).shape == (4, 4, 128)
        # zero-filling a missing modality == passing explicit zeros (projections are bias-free)
        torch.testing.assert_close(model(video, None), model(video, torch.zeros(4, 96)))
        torch.testing.assert_close(model(None, audio), model(torch.zeros(4, 3, 256), audio))
        torch.testing.assert_close(model.stack(None, audio)[:, :3], torch.zeros(4, 3, 128))
        assert not torch.allclose(model(video, None), model(video, audio))
    with pytest.raises(ValueError):
        model(None, None)
    with pytest.raises(ValueError):
        model(torch.randn(4, 2, 256), audio)  # wrong k


def test_fusion_identity_projection_when_sizes_match() -> None:
    model = _fusion(video_dim=128, audio_dim=128)
    assert isinstance(model.video_proj, nn.Identity) and isinstance(model.audio_proj, nn.Identity)
    x = torch.randn(2, 3, 128), torch.randn(2, 128)
    torch.testing.assert_close(model.stack(*x), torch.cat([x[0], x[1][:, None]], dim=1))


def test_fusion_trains_on_missing_modality_batches() -> None:
    """Batch norm in train mode must cope with a zero-filled modality (zero variance features)."""
    model = _fusion().train()
    loss = nn.functional.cross_entropy(model(None, torch.randn(8, 96)), torch.randint(0, N_CLASSES, (8,)))
    loss.backward()
    assert torch.isfinite(loss)


def _cases() -> list[tuple[Callable[[], nn.Module], Callable[[], tuple[torch.Tensor, ...]]]]:
    """(model factory, input factory) pairs, built lazily so each test only pays for its model."""
    return [
        (lambda: HanNet(N_CLASSES), lambda: (torch.randn(2, 1, 128, 43),)),
        (lambda: ChoiNet(N_CLASSES), lambda: (torch.randn(2, 1, 96, UC_FRAMES),)),
        (lambda: XceptionAudio(N_CLASSES), lambda: (torch.randn(2, 1, 96, UC_FRAMES),)),
        (lambda: FrameClassifier(N_CLASSES), lambda: (torch.randn(2, 5, 2048),)),
        (lambda: _fusion(dropout=0.5), lambda: (torch.randn(4, 3, 256), torch.randn(4, 96))),
    ]


@pytest.mark.parametrize("index", range(5))
def test_eval_is_deterministic(index: int) -> None:
    make_model, make_inputs = _cases()[index]
    model, inputs = make_model().eval(), make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), model(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize("index", [0, 1, 3, 4])  # Xception has no dropout, as in Chollet and the ICMR code
def test_train_mode_dropout_differs(index: int) -> None:
    make_model, make_inputs = _cases()[index]
    model, inputs = make_model().train(), make_inputs()
    with torch.no_grad():
        assert not torch.allclose(model(*inputs), model(*inputs))


def test_choi_icmr_is_the_papers_net() -> None:
    """The authors' Keras net: flatten of 128 × 1 × 15 into FC 1024, 2.2–2.6 M parameters (paper: 2.4 M)."""
    model = AUDIO_MODELS["choi_icmr"](N_CLASSES).eval()
    count = n_params(model)
    assert 2.2e6 <= count <= 2.6e6, f"{count:,}"
    assert model.flat_dim == 128 * 1 * 15
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert [c.out_channels for c in convs] == [64, 128, 128, 128]
    assert [p.kernel_size for p in pools] == [(2, 2), (3, 3), (4, 4), (4, 4)]
    assert model.input_norm.num_features == 96  # per mel bin
    x = torch.randn(2, 1, 96, 1366)
    with torch.no_grad():
        logits, emb = model(x), model.embed(x)
    assert logits.shape == (2, N_CLASSES) and torch.isfinite(logits).all()
    assert emb.shape == (2, model.embedding_dim) == (2, 1024)
    torch.testing.assert_close(model.classifier(emb), logits)  # embed is what the classifier sees
    with pytest.raises(ValueError, match="UCcat or CC"):
        model(torch.randn(2, 1, 96, UC_FRAMES))  # a lone UC segment would be 90 % padding: refused


def test_choi_icmr_sees_the_whole_input() -> None:
    """The zero padding is symmetric (37 frames each side) and the flatten keeps time: changing the first
    or the last input frame changes the output (no frame is cropped away)."""
    model = AUDIO_MODELS["choi_icmr"](N_CLASSES).eval()
    x = torch.randn(1, 1, 96, 1366)
    with torch.no_grad():
        base = model.embed(x)
        for t in (0, 1365):
            y = x.clone()
            y[..., t] += 5.0
            assert not torch.allclose(model.embed(y), base)


def test_uccat_concatenates_the_uc_segments_into_one_input() -> None:
    import numpy as np

    from instrec_pipeline.training.audio import AudioTrainConfig, crops_of
    from instrec_pipeline.training.data import uniform_crops

    cfg = AudioTrainConfig(model="choi_icmr")
    assert cfg.strategy == "UCcat"  # the default for the paper's net: one pass per video
    assert (cfg.frames, cfg.input_frames) == (UC_FRAMES, 1366)
    assert AudioTrainConfig().strategy == "UC" and AudioTrainConfig(model="choi").strategy == "UC"
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(3000, 96)).astype(np.float32)  # (T, n_mels), ~64 s
    x = crops_of(mel, cfg)
    assert x.shape == (1, 96, 1366)
    segments = uniform_crops(mel, 10, UC_FRAMES)
    np.testing.assert_array_equal(x[0], np.concatenate(list(segments), axis=1)[:, :1366])  # 1370 → 1366
    short = crops_of(mel[:200], cfg)  # a ~4-s video: overlapping segments, still one full input
    assert short.shape == (1, 96, 1366)
    assert crops_of(mel, AudioTrainConfig(model="choi_icmr", strategy="CC")).shape == (1, 96, 1366)
    assert crops_of(mel, AudioTrainConfig(model="choi")).shape == (10, 96, UC_FRAMES)
    with pytest.raises(ValueError, match="choi_icmr"):
        AudioTrainConfig(model="choi_icmr", strategy="UC")  # its flatten needs the full length
    with pytest.raises(ValueError, match="han"):
        AudioTrainConfig(model="han", strategy="UCcat")  # Han's 1-s input cannot hold 10 segments


def test_choi_icmr_trains_on_uccat_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short smoke of the UCcat path through training and evaluation: one full-length input per video,
    probabilities and embeddings per clip. The net is narrowed (same layout, same flatten of a 1 × 15 map)
    so it runs in seconds on a CPU; the full width is checked above."""
    from functools import partial

    import numpy as np

    from instrec_pipeline.training.audio import AudioTrainConfig, audio_embeddings, audio_probs, train_audio
    from instrec_pipeline.training.data import SplitData

    narrow = partial(ChoiICMRNet, channels=(4, 8, 8, 8), hidden=32)
    monkeypatch.setitem(AUDIO_MODELS, "choi_icmr", narrow)
    rng = np.random.default_rng(0)

    def split(n: int) -> SplitData:
        labels = np.arange(n) % 2
        ramp = 3 * np.linspace(-1, 1, 96)
        mels = {f"v{i}": (rng.normal(size=(300, 96)) + labels[i] * ramp).astype(np.float32) for i in range(n)}
        return SplitData([f"v{i}" for i in range(n)], labels, audio=mels)

    train, val = split(8), split(4)
    cfg = AudioTrainConfig(model="choi_icmr", batch_size=4, max_epochs=2, patience=2, seed=1)
    cpu = torch.device("cpu")
    model, fit = train_audio(train, val, 2, cfg, cpu)
    assert isinstance(model, ChoiICMRNet) and model.flat_dim == 8 * 1 * 15 and fit.epochs_run == 2
    probs = audio_probs(model, val, cfg, 2, cpu)
    assert probs.shape == (4, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    emb = audio_embeddings(model, val, cfg, cpu)
    assert set(emb) == set(val.video_ids) and emb["v0"].shape == (32,)
