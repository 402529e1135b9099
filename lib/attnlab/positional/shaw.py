"""Relative position representations (Shaw et al. 2018), the key term."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from ..config import Config
from .base import ENCODINGS, Kind, PEDims, PositionalEncoding, ScoreMod, relative_fn


@ENCODINGS.register("shaw")
class Shaw(PositionalEncoding):
    """Shaw et al. 2018 relative keys: q_i . a_(clip(j-i, k)) / sqrt(d), 2k+1 learned vectors."""

    class Params(Config):
        clip: int = Field(16, ge=1, description="k: relative distances are clipped to [-k, k]")

    kind: ClassVar[Kind] = "bias"
    query_dependent: ClassVar[bool] = True

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.table = nn.Embedding(2 * params.clip + 1, dims.head_dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        k = self.params.clip
        rel = (k_pos[None, :] - q_pos[:, None]).long().clamp(-k, k) + k  # (Tq, Tk)
        return self.table(rel) / math.sqrt(self.dims.head_dim)  # (Tq, Tk, D): contracted with q

    def query_score_mod(self, q: Tensor, q_pos: Tensor, k_pos: Tensor) -> ScoreMod:
        """The key term as a FlexAttention score_mod: q . a_r for the 2k+1 distances r, looked up per score
        (a (B, H, Tq, 2k+1) table instead of the (B, H, Tq, Tk) bias)."""
        k = self.params.clip
        qa = torch.einsum("bhqd,rd->bhqr", q, self.table.weight.to(q.dtype)) / math.sqrt(self.dims.head_dim)
        rel = relative_fn(k_pos, q_pos)  # (k_idx, q_idx) -> k_pos - q_pos

        def mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            return score + qa[b, h, qi, rel(ki, qi).clamp(-k, k) + k]

        return mod
