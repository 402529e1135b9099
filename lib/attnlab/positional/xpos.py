"""XPos: the length-extrapolatable rotary embedding (Sun et al. 2023)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from .base import ENCODINGS, PEDims, Rotation
from .rope import RoPE


@ENCODINGS.register("xpos")
class XPos(RoPE):
    """XPos (Sun et al. 2023): RoPE with q * zeta^(n/gamma), k * zeta^(-m/gamma), centred positions."""

    class Params(RoPE.Params):
        gamma: float = Field(512.0, gt=0, description="scale length of the exponential decay")

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        d = dims.head_dim
        zeta = (torch.arange(0, d, 2, dtype=torch.float32) + 0.4 * d) / (1.4 * d)  # (D/2,)
        self.register_buffer("zeta", zeta, persistent=False)

    def rotation(self, positions: Tensor) -> Rotation:
        rot = super().rotation(positions)
        p = positions.float()
        centred = p - torch.floor((p.max() + p.min()) / 2) if p.numel() else p
        s = self.zeta.to(p.device)[None, :] ** (centred[:, None] / self.params.gamma)  # (T, D/2)
        return Rotation(rot.cos, rot.sin, q_scale=s, k_scale=1.0 / s)
