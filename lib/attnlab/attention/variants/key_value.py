"""Key-value attention: the keys serve as queries (one symmetric map), after the "Key-Value Transformer"."""

from __future__ import annotations

from torch import Tensor

from ..backends import sdpa_attention
from ..base import ATTENTION, Attention
from ..masks import padding_bias


@ATTENTION.register("key_value")
class KeyValue(Attention):
    """Key-value attention (Borji 2023, "Key-Value Transformer"): scores k_i . k_j with one projection for
    queries and keys (W_Q = W_K), so the score matrix is symmetric before masking and bias; the query
    projection the model computes is not used. Exact softmax through SDPA."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        if key_padding is not None:
            bias = padding_bias(key_padding, k.dtype, bias)
        queries = k[..., -q.shape[-2]:, :]  # the last Tq keys stand for the Tq queries
        return sdpa_attention(queries, k, v, bias=bias, causal=causal, scale=scale)
