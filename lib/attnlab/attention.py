"""Exact softmax attention backends with one signature (DESIGN section 6).

``attend(q, k, v, bias, causal, scale) -> out`` with q (B, H, Tq, D), k and v (B, H, Tk, D),
``bias`` broadcastable to (B, H, Tq, Tk) and added after the q.k scaling, ``causal`` masking
keys after the query (queries aligned to the last keys). ``eager`` materializes the scores
and is the correctness reference for every other backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache, lru_cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import Registry

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

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
    while mask.dim() < 4:  # (H, Tq, Tk) -> (1, H, Tq, Tk): a mask of fewer dims sends SDPA to its math kernel
        mask = mask.unsqueeze(0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


# FlexAttention tiles queries and keys in blocks of this size. Every call passes a block mask: without one
# it uses a single block as long as the sequence, and its CPU kernel then allocates a (Tq, Tk) score
# buffer per thread -- quadratic memory and a slow kernel from about 2K tokens on.
FLEX_BLOCK_SIZE = 128
# Each new (shape, score_mod) compiles a new graph; past dynamo's recompile limit (8) torch silently runs
# the uncompiled flex_attention, which materializes the scores. A sweep over lengths and encodings needs more.
FLEX_RECOMPILE_LIMIT = 64


@cache
def _compiled_flex() -> Callable[..., Tensor]:
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention

    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, FLEX_RECOMPILE_LIMIT)
    return torch.compile(flex_attention, dynamic=False)


@lru_cache(maxsize=64)
def flex_block_mask(tq: int, tk: int, causal: bool = False, window: int | None = None,
                    device: str = "cpu") -> BlockMask:
    """FlexAttention block mask (Dong et al. 2024): all keys, causal (queries aligned to the last keys),
    and/or a window |i - j| <= window, in blocks of FLEX_BLOCK_SIZE; cached per shape."""
    from torch.nn.attention.flex_attention import create_block_mask

    off = tk - tq

    def visible(bi, hi, qi, ki):  # noqa: ANN001, ANN202
        return qi >= 0  # every key (the block mask only fixes the tiling)

    def causal_mod(bi, hi, qi, ki):  # noqa: ANN001, ANN202
        return ki <= qi + off

    def window_mod(bi, hi, qi, ki):  # noqa: ANN001, ANN202
        return (qi + off - ki).abs() <= window

    def causal_window_mod(bi, hi, qi, ki):  # noqa: ANN001, ANN202
        return (ki <= qi + off) & (qi + off - ki <= window)

    mods = {(False, False): visible, (True, False): causal_mod, (False, True): window_mod,
            (True, True): causal_window_mod}
    return create_block_mask(mods[causal, window is not None], None, None, tq, tk, device=device,
                             BLOCK_SIZE=FLEX_BLOCK_SIZE)


@BACKENDS.register("flex")
def flex_attention_backend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None, causal: bool = False,
                           scale: float | None = None, score_mod: Callable | None = None,
                           compiled: bool | None = None, window: int | None = None) -> Tensor:
    """FlexAttention (Dong et al. 2024): bias as a score_mod, causal and window masks as a block mask.
    Compiled on CUDA and for inference; CPU training takes the same computation materialized."""
    from torch.nn.attention.flex_attention import flex_attention

    tq, tk = q.shape[-2], k.shape[-2]
    if score_mod is None and bias is not None:
        b = bias if bias.dim() == 4 else bias[None]
        b = b.expand(*b.shape[:2], tq, tk)  # (B|1, H|1, Tq, Tk); broadcast query/key dims as views
        bb, bh = b.shape[0] > 1, b.shape[1] > 1

        def score_mod(score, bi, hi, qi, ki):  # noqa: ANN001, ANN202
            return score + b[bi if bb else 0, hi if bh else 0, qi, ki]

    if q.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
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


def materialize_score_mod(scores: Tensor, score_mod: Callable) -> Tensor:
    """scores (B, H, Tq, Tk) with `score_mod` applied elementwise through broadcast index grids (the
    eager meaning of a FlexAttention score_mod, for analysis and tests)."""
    b, h, tq, tk = (torch.arange(n, device=scores.device) for n in scores.shape)
    return score_mod(scores, b[:, None, None, None], h[None, :, None, None], tq[None, None, :, None],
                     tk[None, None, None, :])


def padding_bias(key_padding: Tensor, dtype: torch.dtype, bias: Tensor | None = None) -> Tensor:
    """(B, 1, 1, Tk) additive bias: -inf at padding keys (key_padding True), 0 elsewhere; added to `bias`
    (broadcastable to (B, H, Tq, Tk)) when one is given."""
    pad = torch.zeros(key_padding.shape, dtype=dtype, device=key_padding.device).masked_fill(
        key_padding, float("-inf"))[:, None, None, :]
    return pad if bias is None else bias + pad


def mask_padding(score_mod: Callable | None, key_padding: Tensor) -> Callable:
    """A score_mod that also sends padding keys (key_padding (B, Tk) True) to -inf."""
    def mod(score, b, h, qi, ki):  # noqa: ANN001, ANN202
        s = score if score_mod is None else score_mod(score, b, h, qi, ki)
        return torch.where(key_padding[b, ki], float("-inf"), s)

    return mod


def attention_backend(name: str) -> AttentionFn:
    """The exact-attention backend registered as `name`."""
    return BACKENDS.get(name, "model.attention")
