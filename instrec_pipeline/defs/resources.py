"""Configurable resources: what a deployment changes from the launchpad without touching code.

Bound under their keys by ``resource_defs`` (the defs folder finds ``@definitions`` functions, not bare
resource instances).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dagster as dg
from dagster import ConfigurableResource
from pydantic import Field

from instrec_pipeline.media import torchcodec_frames
from instrec_pipeline.media.demux import DemuxParams, Geometry
from instrec_pipeline.parallel import demux_plan
from instrec_pipeline.store import FrameCodec
from instrec_pipeline.store.layout import Layout, default_root


class StoreResource(ConfigurableResource):
    """The store root: a local folder (default ``$INSTREC_HOME`` or ``./data``)."""

    root: str = Field(default="", description="Store root folder; empty = $INSTREC_HOME or ./data")
    lock_wait_s: float = Field(
        default=600.0, ge=0, description="How long a step waits for another run writing its partition"
    )

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.root).expanduser().resolve() if self.root else default_root())


class ComputeResource(ConfigurableResource):
    """Where and how wide the heavy work runs."""

    device: str = Field(default="auto", description="auto (CUDA when present), cpu, cuda, cuda:1 …")
    batch_size: int = Field(default=64, gt=0, le=4096, description="Frames per Inception batch")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Arithmetic of embedding and training: auto = bf16 on CUDA and on CPUs with bf16 units "
        "(a dataset's training.precision is kept under auto)",
    )
    runtime: Literal["auto", "torch", "openvino"] = Field(
        default="auto",
        description="Inception's runtime: auto = OpenVINO on CPU (its fastest here, within cosine 0.9999 "
        "of torch float32), torch on a GPU; recorded with the embeddings, so a switch re-embeds",
    )
    workers: int = Field(
        default=0, ge=0, le=256,
        description="Parallel per-video workers (ffmpeg processes, fetches); 0 = one per usable core",
    )  # fmt: skip
    dask_scheduler: str = Field(
        default="",
        description="tcp://host:port of a Dask distributed scheduler: per-video work runs on its workers "
        "(the store root must then be on a filesystem they share); empty = local threads",
    )


    @property
    def pool_size(self) -> int:
        """``workers``, or one per usable core: single-threaded ffmpeg processes scale best (demux_plan)."""
        return self.workers or demux_plan().workers


class MediaResource(ConfigurableResource):
    """Fetching and demuxing settings shared by every dataset."""

    retries: int = Field(default=3, ge=0, le=20, description="Extra attempts per download, with back-off")
    timeout_s: float = Field(default=60.0, gt=0, description="Network timeout per read")
    max_bytes: int = Field(default=4 * 1024**3, gt=0, description="Largest video fetched (bytes)")
    fetch_deadline_s: float = Field(
        default=1800.0, gt=0, description="Total time for one video's fetch, retries and slow bodies included"
    )
    max_duration_s: float = Field(
        default=7200.0, gt=0, description="Longest video demuxed (checked at probe time, before decoding)"
    )
    cookies_file: str = Field(
        default="", description="Netscape cookies file for YouTube (age-restricted videos, bot checks)"
    )

    @property
    def cookies(self) -> Path | None:
        return Path(self.cookies_file).expanduser() if self.cookies_file else None


class ExtractionResource(ConfigurableResource):
    """Extraction parameters; changing one re-extracts the affected features (and their data version)."""

    fps: float = Field(default=1.0, gt=0, le=60, description="Frames sampled per second of video")
    resize: int = Field(
        default=256, gt=0, le=4096, description="Side length before the centre crop (see geometry)"
    )
    crop: int = Field(
        default=224, gt=0, le=4096, description="Centre-crop size (224 as the paper, 299 Inception's own)"
    )
    geometry: Geometry = Field(
        default="squash",
        description="squash: both sides to resize, aspect ratio ignored, as the paper (the crop keeps 87.5 % "
        "of the width); shorter_side: the shorter side to resize, aspect ratio kept (keeps only 49 % of a "
        "16:9 frame's width). A change re-extracts frames and embeddings",
    )
    inception_weights: str = Field(
        default="auto",
        description="auto (the dataset's default: ImageNet for fcvid/yt8m, else ImageNet when loadable, "
        "random otherwise) | imagenet | random | path to a state-dict file",
    )
    frames: Literal["jpeg", "raw"] = Field(
        default="jpeg", description="How frames are kept: jpeg (~15 KB each) or raw RGB (150 KB at 224²)"
    )
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality of kept frames")
    decoder: Literal["ffmpeg", "torchcodec"] = Field(
        default="ffmpeg",
        description="Frames decoder: ffmpeg, or torchcodec (pip install -e '.[torchcodec]'; NVDEC on the "
        "compute device when it is CUDA and torchcodec is its CUDA build). A change re-extracts the frames",
    )
    seed: int = Field(default=0, description="Seed of Inception's random initialisation (weights: random)")

    def frame_codec(self) -> FrameCodec:
        return FrameCodec(self.frames, self.jpeg_quality)

    def demux_params(
        self, sample_rates: tuple[int, ...], max_duration_s: float = 7200.0, device: str = "cpu"
    ) -> DemuxParams:
        """``device``: where torchcodec decodes (the compute device); ffmpeg always runs on the CPU."""
        if self.decoder == "torchcodec":
            torchcodec_frames.require()
        return DemuxParams(
            fps=self.fps,
            resize=self.resize,
            crop=self.crop,
            sample_rates=sample_rates,
            max_duration_s=max_duration_s,
            geometry=self.geometry,
            decoder=self.decoder,
            decode_device=device if self.decoder == "torchcodec" else "cpu",
        )


@dg.definitions
def resource_defs() -> dg.Definitions:
    """The resource keys every asset and check asks for: ``store``, ``compute``, ``media``, ``extraction``."""
    return dg.Definitions(
        resources={
            "store": StoreResource(),
            "compute": ComputeResource(),
            "media": MediaResource(),
            "extraction": ExtractionResource(),
        }
    )
