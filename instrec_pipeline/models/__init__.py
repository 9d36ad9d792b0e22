"""Network definitions (plain ``nn.Module``s, one file per family, as torchvision's ``models``).

Every model takes ``n_classes`` first, returns logits from ``forward`` and penultimate features from
``embed`` (width ``embedding_dim``). Audio models take ``(B, 1, n_mels, T)`` log-mels; ``AUDIO_INPUTS``
says which log-mel each expects.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .choi import ChoiICMRNet, ChoiNet
from .fusion import LateFusionNet
from .han import HanNet
from .video import FrameClassifier
from .xception import XceptionAudio


@dataclass(frozen=True)
class AudioInput:
    """The log-mel an audio model was designed for: ``n_mels`` × ``frames`` at ``sample_rate``/``hop``."""

    n_mels: int
    frames: int
    sample_rate: int
    n_fft: int
    hop: int

    @property
    def duration_s(self) -> float:
        """Seconds spanned by ``frames`` hops (Han's 43 frames: 1.0 s; Choi's 1366: 29.1 s)."""
        return self.frames * self.hop / self.sample_rate

    def frames_for(self, seconds: float) -> int:
        """Frames of a centred STFT over ``seconds`` of audio (2.912 s at Choi's settings → 137)."""
        return int(round(seconds * self.sample_rate)) // self.hop + 1


#: Han et al. 2016: 128 mels × 43 frames, 22,050 Hz, window 1024, hop 512.
HAN_INPUT = AudioInput(n_mels=128, frames=43, sample_rate=22050, n_fft=1024, hop=512)
#: Choi et al. 2016: 96 mels × 1366 frames (29.12 s), 12 kHz, window 512, hop 256.
CHOI_INPUT = AudioInput(n_mels=96, frames=1366, sample_rate=12000, n_fft=512, hop=256)

#: ``choi_icmr`` is the paper's Choi net (flatten, fixed 1366-frame input); ``choi`` the project's wider,
#: length-free extension of it (global pooling), which stays the fusion's default audio net.
AUDIO_MODELS: dict[str, type[nn.Module]] = {
    "han": HanNet,
    "choi": ChoiNet,
    "choi_icmr": ChoiICMRNet,
    "xception": XceptionAudio,
}
AUDIO_TITLES: dict[str, str] = {
    "han": "Han et al. 2016",
    "choi": "Choi et al. 2016, wider, global pooling (extension)",
    "choi_icmr": "Choi et al. 2016 (the paper's net)",
    "xception": "Xception (48×3 first filters)",
}
AUDIO_INPUTS: dict[str, AudioInput] = {
    "han": HAN_INPUT,
    "choi": CHOI_INPUT,
    "choi_icmr": CHOI_INPUT,
    "xception": CHOI_INPUT,
}

__all__ = [
    "AUDIO_INPUTS",
    "AUDIO_MODELS",
    "AUDIO_TITLES",
    "CHOI_INPUT",
    "HAN_INPUT",
    "AudioInput",
    "ChoiICMRNet",
    "ChoiNet",
    "FrameClassifier",
    "HanNet",
    "LateFusionNet",
    "XceptionAudio",
]
