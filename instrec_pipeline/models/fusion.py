"""Late fusion of unimodal embeddings (the paper's multimodal network)."""

from __future__ import annotations

import torch
from torch import nn


class LateFusionNet(nn.Module):
    """Slizovskaia et al. 2017 late fusion: ``k`` frame + 1 audio embedding → two FC 1024 → classes.

    The unimodal nets are trained separately; their penultimate features (``FrameClassifier.embed`` of
    ``k`` frames, the audio net's ``embed`` of the clip) form a ``(B, k + 1, n)`` input, frames first and
    audio last. Each modality is first mapped to the common width ``n`` by a bias-free Linear layer when
    its size differs (identity otherwise). Bias-free so that zeros stay zeros: a missing modality given
    as zeros in its own space *is* zeros in the common space, which is how the paper makes the fused
    model robust to a missing modality (``forward`` zero-fills ``None``).

    The stacked input is flattened (as the paper's "(k + 1, n) input to FC layers" implies, so ``k`` is
    fixed at construction) and goes through batch norm (as in the authors' code), then two blocks of
    FC ``hidden`` → ReLU → batch norm (→ dropout; none by default, as in the paper), the second block's
    output being the embedding, and the classifier. Returns logits; the softmax belongs to the loss.
    With ``k = 50``, ``n = 1024`` the first FC alone holds 53 M weights.
    """

    def __init__(
        self,
        n_classes: int,
        video_dim: int = 1024,
        audio_dim: int = 1024,
        n: int = 1024,
        k: int = 50,
        hidden: int = 1024,
        dropout: float = 0.0,
        input_norm: bool = True,
    ) -> None:
        super().__init__()
        self.n_classes, self.video_dim, self.audio_dim, self.n, self.k = n_classes, video_dim, audio_dim, n, k
        self.embedding_dim: int = hidden
        self.video_proj: nn.Module = nn.Identity() if video_dim == n else nn.Linear(video_dim, n, bias=False)
        self.audio_proj: nn.Module = nn.Identity() if audio_dim == n else nn.Linear(audio_dim, n, bias=False)
        self.input_norm = nn.BatchNorm1d((k + 1) * n) if input_norm else nn.Identity()
        self.hidden = nn.Sequential(
            nn.Linear((k + 1) * n, hidden),
            nn.ReLU(),
            nn.BatchNorm1d(hidden),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.BatchNorm1d(hidden),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, n_classes)

    def stack(self, video: torch.Tensor | None, audio: torch.Tensor | None) -> torch.Tensor:
        """``(B, k, video_dim)`` | None, ``(B, audio_dim)`` | None → ``(B, k + 1, n)``, zeros for None."""
        if video is None and audio is None:
            raise ValueError("at least one modality is needed")
        if video is not None and (video.ndim != 3 or video.shape[1:] != (self.k, self.video_dim)):
            raise ValueError(f"video must be (B, {self.k}, {self.video_dim}), got {tuple(video.shape)}")
        if audio is not None and (audio.ndim != 2 or audio.shape[1] != self.audio_dim):
            raise ValueError(f"audio must be (B, {self.audio_dim}), got {tuple(audio.shape)}")
        ref = video if video is not None else audio
        assert ref is not None
        b = ref.shape[0]
        v = ref.new_zeros(b, self.k, self.n) if video is None else self.video_proj(video)
        a = ref.new_zeros(b, 1, self.n) if audio is None else self.audio_proj(audio).unsqueeze(1)
        if v.shape[0] != a.shape[0]:
            raise ValueError(f"batch sizes differ: video {v.shape[0]}, audio {a.shape[0]}")
        return torch.cat([v, a], dim=1)

    def embed_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, k + 1, n)`` → ``(B, hidden)``: the second FC block's output."""
        return self.hidden(self.input_norm(x.flatten(1)))

    def forward_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, k + 1, n)`` (already in the common space) → logits ``(B, n_classes)``."""
        return self.classifier(self.dropout(self.embed_stacked(x)))

    def embed(self, video: torch.Tensor | None, audio: torch.Tensor | None) -> torch.Tensor:
        """Fused penultimate features ``(B, hidden)``; ``None`` = missing modality (zeros)."""
        return self.embed_stacked(self.stack(video, audio))

    def forward(self, video: torch.Tensor | None, audio: torch.Tensor | None) -> torch.Tensor:
        """``(B, k, video_dim)`` | None, ``(B, audio_dim)`` | None → logits ``(B, n_classes)``."""
        return self.forward_stacked(self.stack(video, audio))
