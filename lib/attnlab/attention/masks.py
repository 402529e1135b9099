"""Masks for every attention path: causal, padding, FlexAttention block masks and score_mods."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

# FlexAttention tiles queries and keys in blocks of this size. Every call passes a block mask: without one
# it uses a single block as long as the sequence, and its CPU kernel then allocates a (Tq, Tk) score
# buffer per thread -- quadratic memory and a slow kernel from about 2K tokens on.
FLEX_BLOCK_SIZE = 128
# torch 2.13's compiled CPU kernel returns wrong rows (or NaN) when a sequence is shorter than its block and
# its length is 8 mod 16 (8, 24, 40, ..., 120; tests/test_attention.py); blocks no longer than the sequence
# (a power of two >= 16) avoid it, and shorter sequences take the materialized path.
FLEX_MIN_LENGTH = 16


def flex_block_size(tq: int, tk: int) -> int:
    """FLEX_BLOCK_SIZE, or the largest power of two (>= 16) that is not longer than the shorter side."""
    n = min(tq, tk)
    return FLEX_BLOCK_SIZE if n >= FLEX_BLOCK_SIZE else max(FLEX_MIN_LENGTH, 1 << (n.bit_length() - 1))


def causal_mask(tq: int, tk: int, device: torch.device | str = "cpu") -> Tensor:
    """Boolean (Tq, Tk) mask, True where key j may be seen by query i (j <= i + Tk - Tq)."""
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(diagonal=tk - tq)


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


def bias_score_mod(bias: Tensor, tq: int, tk: int) -> Callable:
    """A materialized bias broadcastable to (B, H, Tq, Tk) read as a FlexAttention score_mod."""
    b = bias if bias.dim() == 4 else bias[None]
    b = b.expand(*b.shape[:2], tq, tk)  # (B|1, H|1, Tq, Tk); broadcast query/key dims as views
    bb, bh = b.shape[0] > 1, b.shape[1] > 1

    def mod(score, bi, hi, qi, ki):  # noqa: ANN001, ANN202
        return score + b[bi if bb else 0, hi if bh else 0, qi, ki]

    return mod


def materialize_score_mod(scores: Tensor, score_mod: Callable) -> Tensor:
    """scores (B, H, Tq, Tk) with `score_mod` applied elementwise through broadcast index grids (the
    eager meaning of a FlexAttention score_mod, for analysis and tests)."""
    b, h, tq, tk = (torch.arange(n, device=scores.device) for n in scores.shape)
    return score_mod(scores, b[:, None, None, None], h[None, :, None, None], tq[None, None, :, None],
                     tk[None, None, None, :])


@lru_cache(maxsize=64)
def flex_block_mask(tq: int, tk: int, causal: bool = False, window: int | None = None,
                    device: str = "cpu") -> BlockMask:
    """FlexAttention block mask (Dong et al. 2024): all keys, causal (queries aligned to the last keys),
    and/or a window |i - j| <= window, in blocks of `flex_block_size`; cached per shape."""
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
                             BLOCK_SIZE=flex_block_size(tq, tk))
