"""Han et al. 2016 predominant-instrument CNN (IEEE/ACM TASLP 25(1)), the paper's smallest audio model."""

from __future__ import annotations

import torch
from torch import nn


class HanNet(nn.Module):
    """Han, Kim, Lee 2016: eight 3×3 convolutions in four blocks of two, global max pooling, FC 1024.

    Input ``(B, 1, n_mels, T)``, nominally ``(B, 1, 128, 43)`` (Han's 22,050 Hz, window 1024, hop 512
    log-mel; 43 frames ≈ 1.0 s). Blocks have 32, 64, 128, 256 channels with "same" zero padding and
    LeakyReLU(0.33), as in Han. The first three blocks end in 3×3 max pooling (stride 3) and dropout
    0.25; the fourth ends in Han's global max pooling, so any ``T`` ≥ 27 works (three valid 3×3
    poolings). Then FC 1024 + LeakyReLU (the embedding), dropout 0.5 and the classifier. Han used
    sigmoid outputs for multi-label IRMAS; the ICMR task is single-label, so ``forward`` returns logits
    for a softmax loss.

    12 classes: 1,447,404 parameters (1,447,148 without the input norm), the paper's "1.5 M".

    ``input_norm`` adds a per-mel-bin BatchNorm on the input (not in Han): the feature store keeps raw
    dB values, and a net with no batch norm anywhere trains poorly on unstandardised inputs.
    """

    def __init__(
        self,
        n_classes: int,
        n_mels: int = 128,
        channels: tuple[int, int, int, int] = (32, 64, 128, 256),
        hidden: int = 1024,
        input_norm: bool = True,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.embedding_dim: int = hidden
        self.input_norm = nn.BatchNorm1d(n_mels) if input_norm else nn.Identity()
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(channels):
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.LeakyReLU(0.33)]
                c_in = c
            if i < len(channels) - 1:
                layers += [nn.MaxPool2d(3), nn.Dropout(0.25)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(c_in, hidden), nn.LeakyReLU(0.33))
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(hidden, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, n_mels, T)`` → ``(B, hidden)``: the FC-1024 activations (the fusion input)."""
        x = self.input_norm(x.squeeze(1)).unsqueeze(1)
        x = self.features(x)
        x = torch.amax(x, dim=(2, 3))  # Han's global max pooling
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, n_mels, T)`` → logits ``(B, n_classes)``."""
        return self.classifier(self.dropout(self.embed(x)))
