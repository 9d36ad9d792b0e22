"""The optional frames decoder: torchcodec, on the CPU or — with its CUDA build — on the GPU's NVDEC.

Why: at 1 fps the decoder still decodes every frame (25.5 M for FCVID, 400 M for YouTube-8M); on a GPU
machine NVDEC does that beside the CPU cores, and the frames come out on the device that embeds them.
The default stays ffmpeg (``extraction.decoder``): it is what every test pins down, and it runs anywhere.

Same pictures as the ffmpeg path (:mod:`instrec_pipeline.media.demux`): the frame on screen at
``t_i = (i + 0.5) / fps`` after the first video frame (the last frame is repeated when the video stream
ends before the container), the displayed picture brought to ``resize`` by the same ``geometry`` (pixel
aspect ratio applied), then the centre ``crop``×``crop`` square (x, y = (size − crop) / 2 rounded half
to even, as ffmpeg's crop does). Only the scaler differs (torch's antialiased bicubic vs swscale's):
pixel values agree within a few levels (tested), so the decoder is recorded with the frames and
switching it re-extracts. A stream carrying a rotation is left to ffmpeg (:class:`Unsupported`), which
shows it upright.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention

#: Frames decoded (and resized, in float32) at once: full-resolution pictures are large (a 1080p batch of
#: 64 would take 1.6 GB as float), so memory stays bounded whatever the source's resolution.
DECODE_CHUNK = 8


class Unsupported(Exception):
    """torchcodec cannot show this video as a player does; the caller decodes it with ffmpeg."""


def available() -> bool:
    return importlib.util.find_spec("torchcodec") is not None


def require() -> None:
    """A clear message for a setting that cannot work here (rather than a failure per video)."""
    if not available():
        raise ValueError("extraction.decoder: torchcodec needs torchcodec (pip install -e '.[torchcodec]'; "
                         "its CUDA build from PyTorch's index for NVDEC)")  # fmt: skip


def scaled_size(width: int, height: int, par: float, resize: int, geometry: str) -> tuple[int, int]:
    """``(width, height)`` after the scale step, as the ffmpeg chain's expressions compute it."""
    if geometry == "squash":
        return resize, resize
    shown = width * par
    if shown < height:  # portrait: the displayed width becomes `resize`
        return resize, max(resize, round(resize * height / shown))
    return max(resize, round(resize * shown / height)), resize


def shape_frames(frames: torch.Tensor, size: tuple[int, int], crop: int) -> torch.Tensor:
    """``(n, 3, h, w)`` uint8 → resized to ``size`` (w, h), centre-cropped: ``(n, crop, crop, 3)`` uint8."""
    w, h = size
    x = F.interpolate(frames.float(), size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    x = x.round_().clamp_(0, 255).to(torch.uint8)
    top, left = (round((h - crop) / 2), round((w - crop) / 2))  # ffmpeg's crop: lrint, half to even
    return x[:, :, top : top + crop, left : left + crop].permute(0, 2, 3, 1)


def decode_frames(
    path: Path,
    stream_index: int | None,
    instants: np.ndarray,
    *,
    resize: int,
    crop: int,
    geometry: str,
    sar: float = 1.0,
    device: str = "cpu",
    batch: int = 64,
) -> Iterator[np.ndarray]:
    """Batches of at most ``batch`` and :data:`DECODE_CHUNK` ``(crop, crop, 3)`` uint8 frames, at
    ``instants`` (seconds after the first frame).

    ``sar``: the pixel aspect ratio as the probe (PyAV, libavformat) read it: torchcodec reports none for
    some containers (Matroska's display size).

    Raises :class:`Unsupported` before yielding anything when the file is not for this decoder (a rotated
    stream, or one it cannot open): ffmpeg then decodes it, and says why if it cannot either.
    """
    from torchcodec.decoders import VideoDecoder

    try:
        decoder = VideoDecoder(str(path), stream_index=stream_index, device=device)
    except Exception as exc:  # noqa: BLE001 - any open failure is ffmpeg's to explain
        raise Unsupported(f"torchcodec cannot open it: {exc}") from exc
    meta = decoder.metadata
    if meta.rotation not in (None, 0, 0.0):
        raise Unsupported(f"rotated stream ({meta.rotation}°)")
    size = scaled_size(meta.width, meta.height, sar, resize, geometry)
    begin, end = meta.begin_stream_seconds, meta.end_stream_seconds
    # Past the video stream's end (audio runs on) the last frame stays on screen, as ffmpeg's tpad does.
    last = np.nextafter(end, begin)
    times = np.minimum(begin + instants, last)
    step = max(1, min(batch, DECODE_CHUNK))
    for start in range(0, len(times), step):
        chunk = decoder.get_frames_played_at(seconds=times[start : start + step].tolist())
        yield shape_frames(chunk.data, size, crop).cpu().numpy()
