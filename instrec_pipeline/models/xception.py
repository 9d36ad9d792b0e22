"""Xception (Chollet 2017) adapted to log-mel input, as in the ICMR 2017 paper and its code."""

from __future__ import annotations

import torch
from torch import nn


class _SeparableConv(nn.Sequential):
    """Keras ``SeparableConv2D``: depthwise k×k (one filter per channel) then pointwise 1×1, no bias."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int] = (3, 3)) -> None:
        kh, kw = kernel
        # Keras "same": total k − 1, the extra one at the end for even k (explicit, so no padded copy).
        pad = nn.ZeroPad2d(((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2))
        super().__init__(
            pad,
            nn.Conv2d(c_in, c_in, kernel, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
        )


class _Block(nn.Module):
    """Xception residual block: [ELU →] (separable conv → BN) × n, optional 3×3/2 max pool, + shortcut.

    The shortcut is the identity when shape is kept, else Chollet's strided 1×1 conv + BN.
    """

    def __init__(
        self,
        c_in: int,
        widths: tuple[int, ...],
        kernel: tuple[int, int] = (3, 3),
        pool: nn.Module | None = None,
        act_first: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = c_in
        for i, w in enumerate(widths):
            if i > 0 or act_first:
                layers.append(nn.ELU())
            layers += [_SeparableConv(c, w, kernel), nn.BatchNorm2d(w)]
            c = w
        if pool is not None:
            layers.append(pool)
        self.body = nn.Sequential(*layers)
        if pool is None and c == c_in:
            self.shortcut: nn.Module = nn.Identity()
        else:
            stride = 2 if pool is not None else 1
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c, 1, stride=stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class XceptionAudio(nn.Module):
    """Xception for ``(B, 1, n_mels, T)`` log-mels, following the ICMR 2017 code (Keras, channels-last).

    Input: Choi's log-mel, ``(B, 1, 96, 1366)`` (CC) or ``(B, 1, 96, 137)`` (UC segment); any ``T`` ≥ 7
    and ``n_mels`` ≥ 52 work.

    * Entry: 64 filters of **48 × 3 = 48 mel bins × 3 frames** (kernel ``(48, 3)`` on ``(n_mels, T)``),
      stride 2, no padding: tall spectral-envelope (timbre) filters, the orientation of the authors'
      ``Conv2D(64, (48, 3))`` on a ``(96, 1366, 1)`` input; then a 3×3 conv of 64. Block 2's separable
      convs are 3 × 24 (mel × frames) — long temporal context — as in that code; later ones 3 × 3.
    * Entry-flow blocks of 128, 256, ``middle_channels``; middle flow of ``n_middle`` = 4 residual blocks
      (Chollet has 8) of three separable convs; exit block ``middle_channels`` → 1024 with max pool.
      Chollet's final 1536/2048 separable convs are dropped, as in the ICMR code.
    * Batch norm after every conv, ELU instead of ReLU (as in the ICMR code), global average pooling,
      so any length works; the pooled 1024-d vector is the embedding; a linear classifier follows.

    Width: the paper says 768 filters in the separable convs and 9.6 M parameters; its code uses
    Chollet's 728, and only 728 gives 9.6 M (12 classes: 9,653,492). ``middle_channels`` defaults to 728
    for that reason; 768 gives 10,600,332 (+10 %).
    """

    def __init__(
        self,
        n_classes: int,
        middle_channels: int = 728,
        n_middle: int = 4,
        first_kernel: tuple[int, int] = (48, 3),
        block2_kernel: tuple[int, int] = (3, 24),
    ) -> None:
        super().__init__()
        m = middle_channels
        self.n_classes = n_classes
        self.embedding_dim: int = 1024
        self.stem = nn.Sequential(
            nn.Conv2d(1, 64, first_kernel, stride=2, bias=False),
            nn.BatchNorm2d(64),
            nn.ELU(),
            nn.Conv2d(64, 64, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ELU(),
        )

        def pool() -> nn.Module:
            return nn.MaxPool2d(3, stride=2, padding=1)  # Keras (3, 3)/2 "same": ceil(n / 2)

        self.entry = nn.Sequential(
            _Block(64, (128, 128), block2_kernel, pool(), act_first=False),
            _Block(128, (256, 256), pool=pool()),
            _Block(256, (m, m), pool=pool()),
        )
        self.middle = nn.Sequential(*(_Block(m, (m, m, m)) for _ in range(n_middle)))
        self.exit = _Block(m, (m, 1024), pool=nn.MaxPool2d(2, stride=2, ceil_mode=True))
        self.classifier = nn.Linear(1024, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, n_mels, T)`` → ``(B, 1024)``: the globally averaged exit-flow features."""
        x = self.exit(self.middle(self.entry(self.stem(x))))
        return torch.mean(x, dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, n_mels, T)`` → logits ``(B, n_classes)``."""
        return self.classifier(self.embed(x))
