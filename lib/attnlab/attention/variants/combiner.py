"""Combiner-Fixed (Ren et al. 2021, "Combiner: Full Attention Transformer with Sparse Computation Cost").

Full attention support at sub-quadratic cost: the softmax over all keys is factorised as p(j | i) =
p(block | i) q(j | block). The sequence is cut into blocks of `block` positions; a query attends
directly to the keys of its own block (those up to itself when causal) and, for every other block
(every earlier one when causal), to that block's abstraction: one key, the block's keys pooled, and one
value, the block's values weighted by q(j | block) = softmax_j(q_block . k_j / sqrt(d)), where q_block
is the block's queries pooled. One softmax runs over the direct keys and the abstractions together.
The pooling is the official code's `local_summary` (``sqrt_fixed_full``, TensorFlow; ``_SelfAttSqrtn``,
JAX): `max` (element-wise maximum, its LM configuration and its JAX version) or `mean`. Every key is
reachable, directly or through its block; with block = 1, or one block holding the whole sequence, it
is exact softmax attention. Combiner-Axial is `combiner_axial.py`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ...config import Config
from ..base import ATTENTION, WITHOUT_BIAS, Attention


def _pool(x: Tensor, ok: Tensor, how: str) -> Tensor:
    """x (B, H, R, s, D) pooled over each block's real positions ok (B, 1, R, s): (B, H, R, D); 0 if none."""
    m = ok[..., None]
    if how == "max":
        pooled = x.masked_fill(~m, float("-inf")).amax(-2)
        return torch.where(ok.any(-1)[..., None], pooled, torch.zeros_like(pooled))
    return (x * m).sum(-2) / m.sum(-2).clamp_min(1)


@ATTENTION.register("combiner")
class CombinerFixed(Attention):
    """Combiner-Fixed (Ren et al. 2021): direct attention within a block, pooled abstractions of the others."""

    class Params(Config):
        block: int = Field(16, ge=1, description="block length s (about sqrt(n) for O(n sqrt(n)) cost)")
        summary: Literal["max", "mean"] = Field("max", description="how a block's queries and keys are pooled "
                                                "into its abstraction (the official code's local_summary)")

    accepts = WITHOUT_BIAS

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        b, h, t, d = q.shape
        if k.shape[-2] != t:
            raise ValueError("combiner: queries and keys must have the same length")
        scale = 1.0 / math.sqrt(d) if scale is None else scale
        s = self.params.block
        n_blocks = -(-t // s)
        pad = n_blocks * s - t
        real = torch.ones(b, t, dtype=torch.bool, device=q.device) if key_padding is None else ~key_padding
        qb, kb, vb = (F.pad(x, (0, 0, 0, pad)).view(b, h, n_blocks, s, d) for x in (q, k, v))  # (B, H, R, s, D)
        ok = F.pad(real, (0, pad)).view(b, 1, n_blocks, s)  # (B, 1, R, s): keys that exist and are not padding
        # block abstractions: pooled key; values weighted by the pooled query's attention over the block
        k_region = _pool(kb, ok, self.params.summary)  # (B, H, R, D)
        q_region = _pool(qb, ok, self.params.summary)
        inner = (torch.einsum("bhrd,bhrsd->bhrs", q_region, kb) * scale).masked_fill(~ok, float("-inf"))
        within = torch.nan_to_num(inner.float().softmax(-1)).to(v.dtype)  # an empty block: no weight
        v_region = torch.einsum("bhrs,bhrsd->bhrd", within, vb)  # (B, H, R, D)
        # direct scores within the block (B, H, R, s, s) and region scores (B, H, R, s, R)
        direct = torch.matmul(qb, kb.transpose(-2, -1)) * scale
        allowed = ok[:, :, :, None, :].expand(b, 1, n_blocks, s, s)
        if causal:
            allowed = allowed & torch.ones(s, s, dtype=torch.bool, device=q.device).tril()
        direct = direct.masked_fill(~allowed, float("-inf"))
        region = torch.einsum("bhrsd,bhRd->bhrsR", qb, k_region) * scale
        rid = torch.arange(n_blocks, device=q.device)
        other = (rid[None, :] < rid[:, None]) if causal else (rid[None, :] != rid[:, None])  # (R query, R key)
        region_ok = other[None, None, :, None, :] & (ok.any(-1))[:, :, None, None, :]
        region = region.masked_fill(~region_ok, float("-inf"))
        p = torch.cat([direct, region], -1).float().softmax(-1).to(v.dtype)  # one softmax over both
        out = torch.matmul(p[..., :s], vb) + torch.einsum("bhrsR,bhRd->bhrsd", p[..., s:], v_region)
        return out.reshape(b, h, n_blocks * s, d)[:, :, :t]
