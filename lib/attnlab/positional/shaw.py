"""Relative position representations (Shaw et al. 2018): the key term, and optionally the value term."""

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
    """Shaw et al. 2018 relative keys: q_i . a^K_(clip(j-i, k)) / sqrt(d), 2k+1 learned vectors; with `values`
    also eq. 3's relative values: z_i = sum_j alpha_ij (v_j + a^V_(clip(j-i, k)))."""

    class Params(Config):
        clip: int = Field(16, ge=1, description="k: relative distances are clipped to [-k, k]")
        values: bool = Field(False, description="also the relative value vectors a^V (eq. 3); exact attention only")

    kind: ClassVar[Kind] = "bias"
    query_dependent: ClassVar[bool] = True

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.table = nn.Embedding(2 * params.clip + 1, dims.head_dim)
        nn.init.normal_(self.table.weight, std=0.02)
        self.value_table = nn.Embedding(2 * params.clip + 1, dims.head_dim) if params.values else None
        if self.value_table is not None:
            nn.init.normal_(self.value_table.weight, std=0.02)

    def _rel(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        k = self.params.clip
        return (k_pos[None, :] - q_pos[:, None]).long().clamp(-k, k) + k  # (Tq, Tk): clip(j - i) + k

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        return self.table(self._rel(q_pos, k_pos)) / math.sqrt(self.dims.head_dim)  # (Tq, Tk, D): contracted with q

    def relative_values(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        """a^V_(clip(j-i, k)) for every (i, j): (Tq, Tk, D), weighted by the attention (None without `values`)."""
        return None if self.value_table is None else self.value_table(self._rel(q_pos, k_pos))

    def query_score_mod(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> ScoreMod:
        """The key term as a FlexAttention score_mod: q . a_r for the 2k+1 distances r, looked up per score
        (a (B, H, Tq, 2k+1) table instead of the (B, H, Tq, Tk) bias)."""
        k = self.params.clip
        qa = torch.einsum("bhqd,rd->bhqr", q, self.table.weight.to(q.dtype)) / math.sqrt(self.dims.head_dim)
        rel = relative_fn(k_pos, q_pos)  # (k_idx, q_idx) -> k_pos - q_pos

        def mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            return score + qa[b, h, qi, rel(ki, qi).clamp(-k, k) + k]

        return mod
