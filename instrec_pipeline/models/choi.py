"""Choi et al. 2016 CRNN conv front-end with a dense softmax head, as in the ICMR 2017 paper."""

from __future__ import annotations

import torch
from torch import nn


class ChoiNet(nn.Module):
    """Choi, Fazekas, Sandler, Cho 2016 (CRNN) conv stack with batch norm and ELU; FC head, no GRUs.

    Input ``(B, 1, n_mels, T)``, nominally ``(B, 1, 96, 1366)`` (29.12 s at 12 kHz, hop 256: the CC
    crop) or ``(B, 1, 96, 137)`` (a 2.912 s UC segment); any ``T`` ≥ 1 works. As in Choi's CRNN and the
    ICMR code: a per-mel-bin input batch norm (Choi's ``bn_0_freq``), then four blocks of 3×3 conv →
    batch norm → ELU → max pooling (2×2), (3×3), (4×4), (4×4), which takes 96 mel bins to 1; then
    FC 1024 + ELU (the embedding), dropout 0.5 and the classifier.

    Deviation, and why: the ICMR code zero-padded 1366 frames to 1440 and *flattened* the final
    128 × 1 × 15 map into the FC (1,920 × 1,024 weights: 2.0 M of the paper's 2.4 M), which ties the net
    to one input length. Here the map is pooled globally — max ⊕ mean over time and frequency, so both
    "present anywhere" and "how prevalent" reach the FC — and the last two blocks are widened to
    keep the capacity: channels (64, 128, 256, 512) instead of (64, 128, 128, 128).
    12 classes: 2,612,876 parameters (paper: 2.4 M, +9 %). Pools use ``ceil_mode`` so trailing frames of
    a 137-frame segment are not dropped (137 → 69 → 23 → 6 → 2 time steps; 1366 → 683 → 228 → 57 → 15).
    """

    def __init__(
        self,
        n_classes: int,
        n_mels: int = 96,
        channels: tuple[int, ...] = (64, 128, 256, 512),
        pools: tuple[tuple[int, int], ...] = ((2, 2), (3, 3), (4, 4), (4, 4)),
        hidden: int = 1024,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if len(channels) != len(pools):
            raise ValueError("one pooling size per conv block")
        self.n_classes = n_classes
        self.embedding_dim: int = hidden
        self.input_norm = nn.BatchNorm1d(n_mels)
        layers: list[nn.Module] = []
        c_in = 1
        for c, pool in zip(channels, pools, strict=True):
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1, bias=False),  # bias is redundant before batch norm
                nn.BatchNorm2d(c),
                nn.ELU(),
                nn.MaxPool2d(pool, ceil_mode=True),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(2 * c_in, hidden), nn.ELU())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, n_mels, T)`` → ``(B, hidden)``: the FC-1024 activations (the fusion input)."""
        x = self.input_norm(x.squeeze(1)).unsqueeze(1)
        x = self.features(x)
        x = torch.cat([torch.amax(x, dim=(2, 3)), torch.mean(x, dim=(2, 3))], dim=1)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, n_mels, T)`` → logits ``(B, n_classes)``."""
        return self.classifier(self.dropout(self.embed(x)))
