"""Relative position embeddings that interact with query and key (Huang et al. 2020, method 4).

Huang, Liang, Xu and Xiang ("Improve Transformer Models with Better Relative Position Embeddings")
extend Shaw et al.'s key term with its mirror on the key side: the logit of query i and key j is

    (q_i . k_j + q_i . a_(j-i) + k_j . a_(j-i)) / sqrt(d),

one learned vector a_r per relative distance r, shared by the heads of a layer. It is the relative
counterpart of the four-term expansion of (x_i + p_i) W_Q . (x_j + p_j) W_K with absolute positions,
which the paper calls a generalization of the absolute embedding. transformers' BERT implemented it as
``position_embedding_type="relative_key_query"``, with a table over every distance below
``max_position_embeddings``; here distances are clipped to [-k, k] as in Shaw et al. (clip = max_len - 1 is
that table), so that a model trained at L can be run beyond it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from ..config import Config
from .base import ENCODINGS, Kind, PEDims, PositionalEncoding, ScoreMod, relative_fn


@ENCODINGS.register("relative_key_query")
class RelativeKeyQuery(PositionalEncoding):
    """Huang et al. 2020 (method 4): (q_i.k_j + q_i.a_(j-i) + k_j.a_(j-i)) / sqrt(d), j - i clipped to [-k, k].

    2k+1 learned vectors a_r per layer, shared by its heads."""

    class Params(Config):
        clip: int = Field(16, ge=1, description="k: relative distances are clipped to [-k, k]")

    kind: ClassVar[Kind] = "bias"
    query_dependent: ClassVar[bool] = True
    key_dependent: ClassVar[bool] = True

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.table = nn.Embedding(2 * params.clip + 1, dims.head_dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """a_(clip(j-i, k)) / sqrt(d) for every (i, j): (Tq, Tk, D), contracted with q_i and with k_j."""
        k = self.params.clip
        rel = (k_pos[None, :] - q_pos[:, None]).long().clamp(-k, k) + k  # (Tq, Tk)
        return self.table(rel) / math.sqrt(self.dims.head_dim)

    def query_score_mod(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> ScoreMod:
        """Both terms as a FlexAttention score_mod: q . a_r and k . a_r for the 2k+1 distances r, looked up
        per score ((B, H, T, 2k+1) tables instead of the (B, H, Tq, Tk) bias)."""
        c = self.params.clip
        table = self.table.weight.to(q.dtype) / math.sqrt(self.dims.head_dim)  # (2k+1, D)
        qa = torch.einsum("bhqd,rd->bhqr", q, table)
        ka = torch.einsum("bhkd,rd->bhkr", k, table)
        rel = relative_fn(k_pos, q_pos)  # (k_idx, q_idx) -> k_pos - q_pos

        def mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            r = rel(ki, qi).clamp(-c, c) + c
            return score + qa[b, h, qi, r] + ka[b, h, ki, r]

        return mod
