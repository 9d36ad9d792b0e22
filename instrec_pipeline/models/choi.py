"""Choi et al. 2016's conv stack with a dense softmax head: the ICMR 2017 paper's net and a wider extension.

``ChoiICMRNet`` (key ``choi_icmr``) is the paper's net as in the authors' Keras code; ``ChoiNet`` (key
``choi``) is this project's extension of it, kept because it takes any input length.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _conv_blocks(
    channels: tuple[int, ...], pools: tuple[tuple[int, int], ...], ceil_mode: bool
) -> nn.Sequential:
    """Choi's blocks: 3×3 conv → batch norm → ELU → max pooling, one pooling size per block."""
    if len(channels) != len(pools):
        raise ValueError("one pooling size per conv block")
    layers: list[nn.Module] = []
    c_in = 1
    for c, pool in zip(channels, pools, strict=True):
        layers += [
            nn.Conv2d(c_in, c, 3, padding=1, bias=False),  # bias is redundant before batch norm
            nn.BatchNorm2d(c),
            nn.ELU(),
            nn.MaxPool2d(pool, ceil_mode=ceil_mode),
        ]
        c_in = c
    return nn.Sequential(*layers)


class ChoiICMRNet(nn.Module):
    """The paper's Choi net, as in the authors' Keras code (Veleslavia/ICMR2017,
    ``models/audio/crnn_classification.py``, adapted from Choi's CRNN with the GRUs replaced by a dense head).

    Input ``(B, 1, 96, 1366)``: 29.12 s at 12 kHz, hop 256 — the CC crop, or the paper's UC input, which
    the authors built by concatenating 10 uniformly spread 2.912-s segments into one 29.12-s signal
    (strategy ``UCcat``: one forward pass per video, no averaging). Layers: input zero-padded 1366 → 1440
    frames (37 each side, Keras ``ZeroPadding2D((0, 37))``), a per-mel-bin input batch norm, four blocks of
    3×3 conv → batch norm → ELU → max pooling (2×2), (3×3), (4×4), (4×4) with (64, 128, 128, 128)
    channels (96 mel bins → 48 → 16 → 4 → 1; 1440 frames → 720 → 240 → 60 → 15), **flatten**
    (128 × 1 × 15 = 1,920), FC 1024 + ELU (the embedding), dropout 0.5, the classifier.
    12 classes: 2,349,708 parameters (paper: 2.4 M; 1.97 M of them in the flatten → FC weights).

    Why the flatten: it is what the paper measured, so only this net's numbers compare with the paper's
    "Choi et al." rows. It ties the net to one input length, so any other length is an error rather than
    silently zero-padded (a 137-frame UC segment would be 90 % padding).

    Departures, and why: the authors' input batch norm (``bn_0_freq``) is given ``axis=time_axis``, which in
    Keras' channels-last layout keeps statistics per *time step* (1,440 of them, tied to the position in
    the padded clip); its name and Choi's CRNN mean one per mel bin, which is what is done here. The convs
    have no bias (batch norm follows; the authors' 448 biases do nothing). Weights start from PyTorch's
    default initialisation, not Keras' Glorot-uniform.
    """

    def __init__(
        self,
        n_classes: int,
        n_mels: int = 96,
        frames: int = 1366,
        padded_frames: int = 1440,
        channels: tuple[int, ...] = (64, 128, 128, 128),
        pools: tuple[tuple[int, int], ...] = ((2, 2), (3, 3), (4, 4), (4, 4)),
        hidden: int = 1024,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if padded_frames < frames:
            raise ValueError(f"padded_frames {padded_frames} < frames {frames}")
        self.n_classes = n_classes
        self.n_mels = n_mels
        self.frames = frames
        self.padded_frames = padded_frames
        self.embedding_dim: int = hidden
        self.input_norm = nn.BatchNorm1d(n_mels)
        self.features = _conv_blocks(channels, pools, ceil_mode=False)  # Keras' 'valid' pooling floors
        f, t = n_mels, padded_frames
        for pf, pt in pools:
            f, t = f // pf, t // pt
        if f < 1 or t < 1:
            raise ValueError(f"pools {pools} reduce {n_mels} × {padded_frames} to nothing")
        self.flat_dim = channels[-1] * f * t
        self.fc = nn.Sequential(nn.Linear(self.flat_dim, hidden), nn.ELU())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, n_mels, frames)`` → ``(B, hidden)``: the FC-1024 activations (the fusion input)."""
        if x.shape[-2:] != (self.n_mels, self.frames):
            raise ValueError(
                f"{type(self).__name__} takes (B, 1, {self.n_mels}, {self.frames}) log-mels (its flatten "
                f"fixes the length), got {tuple(x.shape)}: use strategy UCcat or CC"
            )
        pad = self.padded_frames - self.frames
        x = F.pad(x, (pad // 2, pad - pad // 2))  # zeros, as Keras' ZeroPadding2D (before the input norm)
        x = self.input_norm(x.squeeze(1)).unsqueeze(1)
        return self.fc(torch.flatten(self.features(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, n_mels, frames)`` → logits ``(B, n_classes)``."""
        return self.classifier(self.dropout(self.embed(x)))


class ChoiNet(nn.Module):
    """An extension of the paper's Choi net (:class:`ChoiICMRNet`): wider, with global pooling instead of
    the flatten, so it takes any input length. It has no paper counterpart; the report marks it so.

    Why: the paper's flatten (128 × 1 × 15 → 1,024, 2.0 M of its 2.4 M parameters) ties the net to the
    29.12-s input, so it cannot score the 2.912-s UC segments one by one and average them, as the paper's
    text describes UC. Here the final map is pooled globally — max ⊕ mean over time and frequency, so both
    "present anywhere" and "how prevalent" reach the FC — and the last two blocks are widened to keep the
    capacity: channels (64, 128, 256, 512) instead of (64, 128, 128, 128).

    Input ``(B, 1, n_mels, T)``, nominally ``(B, 1, 96, 1366)`` (29.12 s at 12 kHz, hop 256: the CC
    crop) or ``(B, 1, 96, 137)`` (a 2.912 s UC segment); any ``T`` ≥ 1 works. As the paper's net: a
    per-mel-bin input batch norm, then four blocks of 3×3 conv → batch norm → ELU → max pooling (2×2),
    (3×3), (4×4), (4×4), which takes 96 mel bins to 1; then FC 1024 + ELU (the embedding), dropout 0.5 and
    the classifier. 12 classes: 2,612,876 parameters (paper's net: 2.4 M, +9 %). Pools use ``ceil_mode``
    so trailing frames of a 137-frame segment are not dropped (137 → 69 → 23 → 6 → 2 time steps;
    1366 → 683 → 228 → 57 → 15).
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
        self.n_classes = n_classes
        self.embedding_dim: int = hidden
        self.input_norm = nn.BatchNorm1d(n_mels)
        self.features = _conv_blocks(channels, pools, ceil_mode=True)
        self.fc = nn.Sequential(nn.Linear(2 * channels[-1], hidden), nn.ELU())
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
