"""Key-value attention: the keys serve as queries (one symmetric map), after the "Key-Value Transformer".

Borji (2023) compares the symmetric KV map k_i . k_j with an asymmetric version that adds a 2-D
positional encoding to the attention matrix. Its official code (github aliborji/kv-transformer,
``MultiheadAttention_KV``) takes the 2-D sinusoidal encoding of the `positional_encodings` package for
the grid (i, j) -- p(i, j) = [sin/cos of i at c/2 frequencies, sin/cos of j at the same], c =
2 ceil(pos_dim / 4), cut to pos_dim channels -- adds the scaled score to every channel and maps the
result to one logit with a learned linear layer per attention (shared by its heads):
logit_ij = w . (s_ij 1 + p(i, j)) + b = (sum w) s_ij + w . p(i, j) + b, w initialized Xavier-uniform.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor, nn

from ...config import Config
from ..backends import sdpa_attention
from ..base import ATTENTION, Attention, AttnDims
from ..masks import padding_bias


def grid_encoding_2d(n_q: int, n_k: int, channels: int, device: torch.device | str = "cpu") -> Tensor:
    """The `positional_encodings` package's PositionalEncoding2D of an (n_q, n_k) grid: (n_q, n_k, channels)."""
    c = int(math.ceil(channels / 4) * 2)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, c, 2, device=device).float() / c))  # (c/2,)

    def emb(n: int) -> Tensor:  # (n, c): sin and cos of each frequency, intertwined
        x = torch.arange(n, device=device).float()[:, None] * inv_freq
        return torch.stack((x.sin(), x.cos()), -1).flatten(-2)

    grid = torch.cat([emb(n_q)[:, None, :].expand(n_q, n_k, c), emb(n_k)[None, :, :].expand(n_q, n_k, c)], -1)
    return grid[..., :channels]


@ATTENTION.register("key_value")
class KeyValue(Attention):
    """Key-value attention (Borji 2023, "Key-Value Transformer"): scores k_i . k_j with one projection for
    queries and keys (W_Q = W_K), so the score matrix is symmetric before masking and bias; the query
    projection the model computes is not used. With `pos_dim`, the paper's asymmetric version with a 2-D
    positional encoding of (i, j) mapped into the logits. Exact softmax through SDPA."""

    class Params(Config):
        pos_dim: int = Field(0, ge=0, description="channels of the 2-D positional encoding added to the attention "
                             "matrix (the official code: 10); 0: the symmetric KV map alone")

    def __init__(self, params: Params, dims: AttnDims) -> None:
        super().__init__(params, dims)
        self.pos_weight = self.pos_bias = None
        if params.pos_dim:  # parameters, not an nn.Linear: the model's N(0, 0.02) init of Linear layers skips them
            self.pos_weight = nn.Parameter(torch.empty(params.pos_dim))
            bound = math.sqrt(6.0 / (params.pos_dim + 1))  # Xavier-uniform of a (1, pos_dim) Linear
            nn.init.uniform_(self.pos_weight, -bound, bound)
            self.pos_bias = nn.Parameter(torch.zeros(()))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        if key_padding is not None:
            bias = padding_bias(key_padding, k.dtype, bias)
        t_q, t_k = q.shape[-2], k.shape[-2]
        queries = k[..., -t_q:, :]  # the last Tq keys stand for the Tq queries
        if self.pos_weight is not None:
            w = self.pos_weight.to(k.dtype)
            queries = queries * w.sum()  # (sum w) s_ij: the score enters every channel of the map
            grid = grid_encoding_2d(t_k, t_k, self.params.pos_dim, k.device)[-t_q:].to(k.dtype)  # (Tq, Tk, P)
            pos = grid @ w + self.pos_bias.to(k.dtype)  # (Tq, Tk): w . p(i, j) + b
            bias = pos if bias is None else bias + pos
        return sdpa_attention(queries, k, v, bias=bias, causal=causal, scale=scale)
