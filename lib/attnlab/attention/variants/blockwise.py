"""Blockwise causal attention (Sun et al. 2023, "A Length-Extrapolatable Transformer", sec. 3.3).

The sequence is cut into blocks of `block` positions (the training length); a query in block b sees
the keys of blocks b - 1 and b (and, when causal, only those up to itself). XPos is evaluated
beyond its training length this way: every query keeps at least `block` keys of context, and no
relative distance exceeds 2 x block - 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ...config import Config
from ..base import ATTENTION, Attention


def blockwise_mask(tq: int, tk: int, block: int, causal: bool, device: torch.device | str = "cpu") -> Tensor:
    """(Tq, Tk) True where query i may see key j: j's block is i's or the one before (and j <= i if causal);
    queries are the last Tq of the Tk positions."""
    i = torch.arange(tk - tq, tk, device=device)[:, None]
    j = torch.arange(tk, device=device)[None, :]
    keep = (j // block >= i // block - 1) & (j // block <= i // block)
    return keep & (j <= i) if causal else keep


@ATTENTION.register("blockwise")
class Blockwise(Attention):
    """Blockwise causal attention (Sun et al. 2023): softmax over the keys of a query's block and the previous."""

    class Params(Config):
        block: int = Field(128, ge=1, description="block length (Sun et al.: the training length)")

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        keep = blockwise_mask(q.shape[-2], k.shape[-2], self.params.block, causal, q.device)  # (Tq, Tk)
        if key_padding is not None:  # (B, Tk): padding keys hidden; a query always sees itself
            tq, tk = q.shape[-2], k.shape[-2]
            diag = torch.arange(tk, device=q.device)[None, :] == torch.arange(tk - tq, tk, device=q.device)[:, None]
            keep = (keep & ~key_padding[:, None, None, :]) | diag
        mask = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill(~keep, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask if bias is None else mask + bias, scale=scale)
