"""Exact softmax attention backends with one signature (DESIGN section 6).

``attend(q, k, v, bias, causal, scale) -> out`` with q (B, H, Tq, D), k and v (B, H, Tk, D),
``bias`` broadcastable to (B, H, Tq, Tk) and added after the q.k scaling, ``causal`` masking
keys after the query (queries aligned to the last keys). ``eager`` materializes the scores
and is the correctness reference for every other backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import Registry

AttentionFn = Callable[..., Tensor]
BACKENDS: Registry[AttentionFn] = Registry("attention backend")


def causal_mask(tq: int, tk: int, device: torch.device | str = "cpu") -> Tensor:
    """Boolean (Tq, Tk) mask, True where key j may be seen by query i (j <= i + Tk - Tq)."""
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)


@BACKENDS.register("eager")
def eager_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, causal: bool = False,
                    scale: float | None = None) -> Tensor:
    """Reference softmax attention (Vaswani et al. 2017, eq. 1) with materialized scores."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    if bias is not None:
        scores = scores + bias
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), v)  # (B, H, Tq, D)


@BACKENDS.register("sdpa")
def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, causal: bool = False,
                   scale: float | None = None) -> Tensor:
    """torch scaled_dot_product_attention; a bias travels as a float attn_mask."""
    if bias is None:
        causal_flag = causal and q.shape[-2] == k.shape[-2]
        mask = None if causal_flag or not causal else causal_mask(q.shape[-2], k.shape[-2], q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal_flag, scale=scale)
    mask = bias.to(q.dtype)
    if causal:
        mask = mask.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


@cache
def _compiled_flex() -> Callable[..., Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


@BACKENDS.register("flex")
def flex_attention_backend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, causal: bool = False,
                           scale: float | None = None, score_mod: Callable | None = None,
                           compiled: bool | None = None) -> Tensor:
    """FlexAttention (Dong et al. 2024): bias as a score_mod, causality as a block mask."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    tq, tk = q.shape[-2], k.shape[-2]
    if score_mod is None and bias is not None:
        b = bias if bias.dim() == 4 else bias[None]  # (B|1, H|1, Tq, Tk)
        bb, bh = b.shape[0] > 1, b.shape[1] > 1

        def score_mod(score, bi, hi, qi, ki):  # noqa: ANN001, ANN202
            return score + b[bi if bb else 0, hi if bh else 0, qi, ki]

    block_mask = None
    if causal:
        off = tk - tq

        def mask_mod(bi, hi, qi, ki):  # noqa: ANN001, ANN202
            return ki <= qi + off

        block_mask = create_block_mask(mask_mod, None, None, tq, tk, device=str(q.device))
    use_compiled = (q.device.type == "cuda" or not torch.is_grad_enabled()) if compiled is None else compiled
    fn = _compiled_flex() if use_compiled else flex_attention
    return fn(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)


def attention_backend(name: str) -> AttentionFn:
    """The exact-attention backend registered as `name`."""
    return BACKENDS.get(name, "model.attention")
