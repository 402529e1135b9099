"""Exact softmax attention: eager (the reference), sdpa and flex, as functions and as registered modules.

``eager`` materializes the scores and is the correctness reference for every other path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ATTENTION, Attention
from .masks import (
    FLEX_MIN_LENGTH,
    bias_score_mod,
    causal_mask,
    flex_block_mask,
    mask_padding,
    materialize_score_mod,
    padding_bias,
)

# Each new (shape, score_mod) compiles a new graph; past dynamo's recompile limit (8) torch silently runs
# the uncompiled flex_attention, which materializes the scores. A sweep over lengths and encodings needs more.
FLEX_RECOMPILE_LIMIT = 64


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


def attention_weights(q: Tensor, k: Tensor, bias: Tensor | None = None, causal: bool = False,
                      scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
    """Softmax attention weights alpha (B, H, Tq, Tk), materialized (Vaswani et al. 2017, eq. 1), for terms that
    weight something other than v (Shaw et al.'s relative values)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    if bias is not None:
        scores = scores + bias
    if key_padding is not None:
        scores = scores + padding_bias(key_padding, scores.dtype)
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    return scores.softmax(dim=-1)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, causal: bool = False,
                   scale: float | None = None) -> Tensor:
    """torch scaled_dot_product_attention; a bias travels as a float 4-D attn_mask."""
    if bias is None:
        causal_flag = causal and q.shape[-2] == k.shape[-2]
        mask = None if causal_flag or not causal else causal_mask(q.shape[-2], k.shape[-2], q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal_flag, scale=scale)
    mask = bias.to(q.dtype)
    if causal:
        mask = mask.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    while mask.dim() < 4:  # (H, Tq, Tk) -> (1, H, Tq, Tk): a mask of fewer dims sends SDPA to its math kernel
        mask = mask.unsqueeze(0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


@cache
def _compiled_flex() -> Callable[..., Tensor]:
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention

    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, FLEX_RECOMPILE_LIMIT)
    return torch.compile(flex_attention, dynamic=False)


def flex_attention_backend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, causal: bool = False,
                           scale: float | None = None, score_mod: Callable | None = None,
                           compiled: bool | None = None, window: int | None = None) -> Tensor:
    """FlexAttention (Dong et al. 2024): bias as a score_mod, causal and window masks as a block mask.
    Compiled on CUDA and for inference; CPU training takes the same computation materialized."""
    from torch.nn.attention.flex_attention import flex_attention

    tq, tk = q.shape[-2], k.shape[-2]
    if score_mod is None and bias is not None:
        score_mod = bias_score_mod(bias, tq, tk)
    if q.device.type == "cpu" and (min(tq, tk) < FLEX_MIN_LENGTH or (
            torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)))):
        return _flex_reference(q, k, v, score_mod, causal, window, scale)  # no FlexAttention backward on CPU
    block_mask = flex_block_mask(tq, tk, causal, window, str(q.device))
    use_compiled = (q.device.type == "cuda" or not torch.is_grad_enabled()) if compiled is None else compiled
    fn = _compiled_flex() if use_compiled else flex_attention
    return fn(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)


def _flex_reference(q: Tensor, k: Tensor, v: Tensor, score_mod: Callable | None, causal: bool,
                    window: int | None, scale: float | None) -> Tensor:
    """What flex computes, materialized and differentiable (CPU training: FlexAttention has no CPU backward)."""
    tq, tk = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    if score_mod is not None:
        scores = materialize_score_mod(scores, score_mod)
    rel = torch.arange(tq, device=q.device)[:, None] + (tk - tq) - torch.arange(tk, device=q.device)[None]
    keep = torch.ones_like(rel, dtype=torch.bool)  # (Tq, Tk), query - key
    if causal:
        keep &= rel >= 0
    if window is not None:
        keep &= rel.abs() <= window
    return torch.matmul(scores.masked_fill(~keep, float("-inf")).softmax(dim=-1), v)  # (B, H, Tq, D)


class _Materialized(Attention):
    """An exact backend that takes the bias as a tensor (padding keys join it as -inf)."""

    exact = True
    fn: Callable[..., Tensor]

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        if score_mod is not None:
            raise ValueError(f"{self.name}: takes a materialized bias, not a score_mod")
        if key_padding is not None:
            bias = padding_bias(key_padding, q.dtype, bias)
        return type(self).fn(q, k, v, bias=bias, causal=causal, scale=scale)


@ATTENTION.register("eager")
class Eager(_Materialized):
    """Reference softmax attention (Vaswani et al. 2017, eq. 1): scores materialized."""

    fn = staticmethod(eager_attention)


@ATTENTION.register("sdpa")
class SDPA(_Materialized):
    """PyTorch's scaled_dot_product_attention (flash / memory-efficient kernels where they apply)."""

    fn = staticmethod(sdpa_attention)


@ATTENTION.register("flex")
class Flex(Attention):
    """FlexAttention (Dong et al. 2024): bias encodings as score_mods, masks as block masks."""

    exact = True
    uses_score_mod = True

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None,
                score_mod: Callable | None = None, causal: bool = False, scale: float | None = None,
                key_padding: Tensor | None = None) -> Tensor:
        if key_padding is not None:
            base = score_mod if bias is None else bias_score_mod(bias, q.shape[-2], k.shape[-2])
            score_mod, bias = mask_padding(base, key_padding), None
        return flex_attention_backend(q, k, v, bias=bias, causal=causal, scale=scale, score_mod=score_mod)
