"""End-to-end feature-level fusion (the D-PET study's variant): the selected radiomics vector, standardised, is
projected linearly into the CNN's embedding space and ADDED to the CNN embedding before the classification head;
the projection is trained with the CNN."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.errors import InputError


class RadiomicsProjection(nn.Module):
    """``embedding + W @ ((extra - mean) / scale) + b``.

    ``mean``/``scale`` are buffers (saved in the state dict) fitted on a fold's training cases only, so the
    standardisation is learned inside the fold like every other step.
    """

    def __init__(self, extra_dim: int, embed_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(extra_dim))
        self.register_buffer("scale", torch.ones(extra_dim))
        self.linear = nn.Linear(extra_dim, embed_dim)

    @torch.no_grad()
    def fit_standardiser(self, extra: torch.Tensor) -> None:
        """Set mean and scale from the training cases' radiomics (a constant column keeps scale 1)."""
        std = extra.std(dim=0, unbiased=False)
        self.mean.copy_(extra.mean(dim=0))
        self.scale.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def forward(self, embedding: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        return embedding + self.linear((extra.to(self.mean.dtype) - self.mean) / self.scale).to(embedding.dtype)


def check_extra(extra, n_cases: int, extra_dim: int) -> torch.Tensor | None:
    """The radiomics matrix as float32 ``(n_cases, extra_dim)``, or ``None`` when the model has no fusion;
    InputError when its shape does not fit or it holds NaN/inf."""
    if extra_dim == 0:
        if extra is not None:
            raise InputError("radiomics vectors were given but the deep model was configured without them "
                             "(extra_dim=0)")
        return None
    if extra is None:
        raise InputError(f"this deep model fuses {extra_dim} radiomics features: "
                         f"pass `extra` ({n_cases} x {extra_dim})")
    values = np.asarray(extra, dtype=np.float32)
    if values.ndim == 1 and n_cases == 1:
        values = values[None]
    if values.shape != (n_cases, extra_dim):
        raise InputError(f"radiomics matrix has shape {values.shape}, expected ({n_cases}, {extra_dim})")
    bad = np.flatnonzero(~np.all(np.isfinite(values), axis=1))
    if bad.size:
        raise InputError(f"radiomics vectors hold NaN or infinite values (case rows {bad.tolist()[:10]})")
    return torch.from_numpy(values)
