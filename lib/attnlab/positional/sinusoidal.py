"""Fixed sinusoidal positions (Vaswani et al. 2017, section 3.5)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import ENCODINGS, Kind, PositionalEncoding


def sinusoidal_table(positions: Tensor, d_model: int) -> Tensor:
    """The sinusoidal embedding (T, d) for `positions` (Vaswani et al. 2017): w_i = 10000^(-2i/d), sin at 2i,
    cos at 2i + 1."""
    inv = 1.0 / (10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float32, device=positions.device) / d_model))
    ang = positions.float()[:, None] * inv[None, :]  # (T, d/2)
    return torch.stack((ang.sin(), ang.cos()), dim=-1).flatten(1)  # (T, d)


@ENCODINGS.register("sinusoidal")
class Sinusoidal(PositionalEncoding):
    """Fixed sinusoids (Vaswani et al. 2017, section 3.5): w_i = 10000^(-2i/d)."""

    kind: ClassVar[Kind] = "additive"

    def embed(self, positions: Tensor) -> Tensor:
        return sinusoidal_table(positions, self.dims.d_model)  # (T, d)
