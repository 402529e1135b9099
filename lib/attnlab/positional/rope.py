"""Rotary position embedding (Su et al., RoFormer)."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from ..config import Config
from .base import ENCODINGS, Kind, PEDims, PositionalEncoding, Rotation


def rope_inv_freq(head_dim: int, theta: float = 10000.0) -> Tensor:
    """RoFormer frequencies theta_i = base^(-2(i-1)/d), i = 1..d/2."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def cos_sin(positions: Tensor, inv_freq: Tensor, attention_factor: float = 1.0) -> tuple[Tensor, Tensor]:
    """cos and sin (T, D/2) of the angles m * theta_i, times an attention factor (YaRN)."""
    angles = positions.float()[:, None] * inv_freq[None, :].to(positions.device)  # (T, D/2)
    return angles.cos() * attention_factor, angles.sin() * attention_factor


@ENCODINGS.register("rope")
class RoPE(PositionalEncoding):
    """Rotary position embedding (Su et al., RoFormer, eq. 34): theta_i = base^(-2(i-1)/d)."""

    class Params(Config):
        theta: float = Field(10000.0, gt=0, description="RoPE base")

    kind: ClassVar[Kind] = "rotary"

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        inv, self.attention_factor = self.init_inv_freq()
        self.register_buffer("inv_freq", inv, persistent=False)

    def init_inv_freq(self) -> tuple[Tensor, float]:
        return rope_inv_freq(self.dims.head_dim, self.params.theta), 1.0

    def rotation(self, positions: Tensor) -> Rotation:
        cos, sin = cos_sin(positions, self.inv_freq, self.attention_factor)
        return Rotation(cos, sin)
