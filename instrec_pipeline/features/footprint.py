"""How much disk a partition's extraction will take, from its videos' durations, before it starts.

Figures per second of video follow from the extraction settings (frames per second and their codec, the
audio rates, the log-mel hops and bands, the embedding width); compression ratios are those measured on
real videos with the store's codecs (float audio and log-mels barely compress under Blosc).
"""

from __future__ import annotations

from collections.abc import Iterable

from instrec_pipeline.features.logmel import MelParams
from instrec_pipeline.features.visual import EMBEDDING_DIM
from instrec_pipeline.store import FrameCodec

#: The raw videos at ≤ 480p plus audio (the YouTube format the fetcher picks): ~1.2 Mbit/s.
RAW_VIDEO_BYTES_PER_S = 150_000
#: Stored / uncompressed bytes under Blosc (lz4): float32 audio and log-mels, Inception embeddings.
FLOAT_RATIO = 0.9
EMBEDDING_RATIO = 0.8


def footprint(
    seconds: float,
    fps: float,
    crop: int,
    codec: FrameCodec,
    sample_rates: Iterable[int],
    mels: Iterable[MelParams],
) -> dict[str, float]:
    """Estimated bytes per part of the store for ``seconds`` of video."""
    out = {
        "raw videos": seconds * RAW_VIDEO_BYTES_PER_S,
        "frames": seconds * fps * codec.bytes_per_frame(crop),
    }
    for sr in sample_rates:
        out[f"audio {sr} Hz"] = seconds * sr * 4 * FLOAT_RATIO
    for mel in mels:
        out[f"log-mel {mel.name}"] = seconds * mel.sample_rate / mel.hop * mel.n_mels * 4 * FLOAT_RATIO
    out["embeddings"] = seconds * fps * EMBEDDING_DIM * 4 * EMBEDDING_RATIO
    return out
