"""The T5 relative-position bias (Raffel et al. 2020): one learned scalar per (bucket, head)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from ..config import Config
from .base import ENCODINGS, Kind, PEDims, PositionalEncoding, ScoreMod, relative_fn


def t5_relative_bucket(relative_position: Tensor, bidirectional: bool = True, num_buckets: int = 32,
                       max_distance: int = 128) -> Tensor:
    """T5 relative-position bucket (Raffel et al. 2020); relative_position = key - query."""
    rel = relative_position.long()
    buckets = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rel > 0).long() * num_buckets
        n = rel.abs()
    else:
        n = (-rel).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (
        torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, n, large)


@ENCODINGS.register("t5")
class T5Bias(PositionalEncoding):
    """T5 relative bias (Raffel et al. 2020): one learned scalar per (bucket, head)."""

    class Params(Config):
        num_buckets: int = Field(32, ge=2)
        max_distance: int = Field(128, ge=2, description="distances beyond share the last bucket")

    kind: ClassVar[Kind] = "bias"

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.table = nn.Embedding(params.num_buckets, dims.n_heads)
        nn.init.normal_(self.table.weight, std=0.02)

    def buckets(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        rel = k_pos[None, :].long() - q_pos[:, None].long()  # (Tq, Tk), key - query
        return t5_relative_bucket(rel, not self.dims.causal, self.params.num_buckets, self.params.max_distance)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        return self.table(self.buckets(q_pos, k_pos)).permute(2, 0, 1)  # (H, Tq, Tk)

    def score_mod(self, q_pos: Tensor, k_pos: Tensor) -> ScoreMod:
        """Buckets computed inside the FlexAttention score_mod (never materialized)."""
        table, rel = self.table.weight, relative_fn(q_pos, k_pos)
        bidirectional, nb, md = not self.dims.causal, self.params.num_buckets, self.params.max_distance

        def mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            return score + table[t5_relative_bucket(-rel(qi, ki), bidirectional, nb, md), h]

        return mod
