"""Log-mel spectrograms with torchaudio, matching librosa (which the 2017 code used).

librosa's ``melspectrogram`` + ``power_to_db(ref=1.0, top_db=80)`` is reproduced with torchaudio's
``MelSpectrogram`` (Slaney mel scale and normalisation, centred frames, zero padding as librosa ≥ 0.10)
and ``amplitude_to_DB``; the STFT runs on the GPU when there is one. The whole video is stored (time-major,
``(frames, n_mels)``); the paper's crops (CC, UC, Han's 3-s segments) are views taken at training time,
so changing the crop strategy never needs re-extraction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch
import torchaudio


@dataclass(frozen=True)
class MelParams:
    """One log-mel input of the paper; ``name`` is the store's modality suffix."""

    name: str
    sample_rate: int
    n_fft: int
    hop: int
    n_mels: int
    top_db: float = 80.0
    amin: float = 1e-10

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


#: Choi et al. 2016: 12 kHz, window 512, hop 256, 96 mels, 80 dB range (29.12 s = 1366 frames).
CHOI = MelParams("choi", 12000, 512, 256, 96)
#: Han et al. 2016: 22,050 Hz, window 1024, hop 512, 128 mels. Its 43-frame input spans 43 × 512 / 22,050
#: ≈ 1.0 s with these settings (the ICMR text says ≈ 3 s, which its own parameters do not give).
HAN = MelParams("han", 22050, 1024, 512, 128)
MEL_INPUTS: dict[str, MelParams] = {p.name: p for p in (CHOI, HAN)}


@lru_cache(maxsize=8)
def _transform(params: MelParams, device: str) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=params.sample_rate,
        n_fft=params.n_fft,
        hop_length=params.hop,
        n_mels=params.n_mels,
        f_min=0.0,
        f_max=params.sample_rate / 2,
        power=2.0,
        norm="slaney",
        mel_scale="slaney",
        center=True,
        pad_mode="constant",
    ).to(device)


def log_mel(audio: np.ndarray | torch.Tensor, params: MelParams, device: str = "cpu") -> np.ndarray:
    """Mono audio at ``params.sample_rate`` → float32 ``(frames, n_mels)`` in dB (max − top_db floor)."""
    x = torch.from_numpy(np.array(audio, dtype=np.float32)).to(device)  # a copy: inputs may be read-only
    if x.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        return np.zeros((0, params.n_mels), dtype=np.float32)
    with torch.inference_mode():
        power = _transform(params, device)(x)  # (n_mels, frames)
        db = torchaudio.functional.amplitude_to_DB(
            power, multiplier=10.0, amin=params.amin, db_multiplier=0.0, top_db=params.top_db
        )
    return db.T.contiguous().cpu().numpy()
