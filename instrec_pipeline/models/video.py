"""Frame-level classifier over stored Inception v3 embeddings (the paper's video branch)."""

from __future__ import annotations

import torch
from torch import nn


class FrameClassifier(nn.Module):
    """MLP on 2048-d Inception v3 frame embeddings, trained frame by frame (each with its video's label).

    The paper fine-tunes Inception v3 with a softmax on its 2048-d pool features, frame-level; training
    it end to end took 11–98 h per model, so this pipeline extracts the embeddings once (eval mode) and
    trains only the head. The head gets hidden layer(s) (Linear → ReLU → dropout; default one of 1024)
    to recover some of the capacity fine-tuning gave, and its last hidden layer is the embedding that
    late fusion consumes. ``hidden_dims=()`` gives the paper's plain linear softmax, embedding = input.

    ``forward`` takes ``(B, 2048)`` → ``(B, C)`` or ``(B, k, 2048)`` → per-frame ``(B, k, C)``;
    ``video_logits`` turns ``k`` frames into one clip-level prediction.
    """

    def __init__(
        self,
        n_classes: int,
        input_dim: int = 2048,
        hidden_dims: tuple[int, ...] = (1024,),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.input_dim = input_dim
        layers: list[nn.Module] = []
        d = input_dim
        for h in hidden_dims:
            layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
            d = h
        self.hidden = nn.Sequential(*layers)
        self.embedding_dim: int = d
        self.classifier = nn.Linear(d, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., input_dim)`` → ``(..., embedding_dim)``: the last hidden layer (the fusion input)."""
        return self.hidden(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, input_dim)`` or ``(B, k, input_dim)`` → per-frame logits ``(B, C)`` or ``(B, k, C)``."""
        return self.classifier(self.embed(x))

    def video_logits(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, average: str = "prob"
    ) -> torch.Tensor:
        """``(B, k, input_dim)`` → clip logits ``(B, C)`` from the mean over the (unmasked) frames.

        ``average="prob"`` (default) returns log of the mean frame *probability*, so its softmax is the
        mean of the per-frame softmaxes — the paper's averaging of frame predictions; ``"logit"``
        averages the logits instead. ``mask`` ``(B, k)`` (True = real frame) lets videos shorter than
        ``k`` s be padded; every row needs at least one real frame.
        """
        if x.ndim != 3:
            raise ValueError(f"expected (B, k, {self.input_dim}) input, got {tuple(x.shape)}")
        logits = self(x)  # (B, k, C)
        if mask is None:
            mask = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
        mask = mask.to(torch.bool)
        counts = mask.sum(dim=1, keepdim=True)  # (B, 1)
        if average == "logit":
            return (logits * mask.unsqueeze(-1)).sum(dim=1) / counts.clamp(min=1)
        if average != "prob":
            raise ValueError(f"average must be 'prob' or 'logit', not {average!r}")
        logp = torch.log_softmax(logits, dim=-1).masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return torch.logsumexp(logp, dim=1) - torch.log(counts.to(logp.dtype))
