"""The store: one owner for its layout on disk, the modalities' schema and the commit protocol."""

from instrec_pipeline.store import ragged
from instrec_pipeline.store.lock import PartitionBusy
from instrec_pipeline.store.ragged import RaggedArray, params_digest
from instrec_pipeline.store.schema import (
    EMBEDDINGS,
    FINETUNED_EMBEDDINGS,
    FRAMES,
    FeatureStore,
    FrameCodec,
    Frames,
    audio_modality_name,
    logmel_modality_name,
    open_audio,
)

__all__ = [
    "ragged",
    "EMBEDDINGS",
    "FINETUNED_EMBEDDINGS",
    "FRAMES",
    "FeatureStore",
    "FrameCodec",
    "PartitionBusy",
    "Frames",
    "RaggedArray",
    "audio_modality_name",
    "logmel_modality_name",
    "open_audio",
    "params_digest",
]
