"""Combiner-Fixed (Ren et al. 2021, "Combiner: Full Attention Transformer with Sparse Computation Cost").

Full attention support at sub-quadratic cost: the softmax over all keys is factorised as p(j | i) =
p(region | i) q(j | region). The sequence is cut into blocks of `block` positions; a query attends
directly to the keys of its own block (those up to itself when causal) and, for every other block
(every earlier one when causal), to that block's abstraction: one key, the mean of the block's keys,
with log(block size) added to its logit so that a block of equal keys weighs as its members would,
and one value, the block's values weighted by q(j | block) = softmax_j(w . k_j), w learned per head.
Every key is reachable, directly or through its block. With block = 1, or one block holding the whole
sequence, it is exact softmax attention. Combiner-Axial is `combiner_axial.py`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ...config import Config
from ..base import ATTENTION, WITHOUT_BIAS, Attention, AttnDims


@ATTENTION.register("combiner")
class CombinerFixed(Attention):
    """Combiner-Fixed (Ren et al. 2021): direct attention within a block, block abstractions for the rest."""

    class Params(Config):
        block: int = Field(16, ge=1, description="block length s (about sqrt(n) for O(n sqrt(n)) cost)")

    accepts = WITHOUT_BIAS

    def __init__(self, params: Params, dims: AttnDims) -> None:
        super().__init__(params, dims)
        self.w = nn.Parameter(torch.zeros(dims.n_heads, dims.head_dim))  # q(j | block) ~ exp(w . k_j); 0: uniform

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        b, h, t, d = q.shape
        if k.shape[-2] != t:
            raise ValueError("combiner: queries and keys must have the same length")
        scale = 1.0 / math.sqrt(d) if scale is None else scale
        s = self.params.block
        n_blocks = -(-t // s)
        pad = n_blocks * s - t
        real = torch.ones(b, t, dtype=torch.bool, device=q.device)
        if key_padding is not None:
            real = ~key_padding
        qb, kb, vb = (F.pad(x, (0, 0, 0, pad)).view(b, h, n_blocks, s, d) for x in (q, k, v))  # (B, H, R, s, D)
        ok = F.pad(real, (0, pad)).view(b, 1, n_blocks, s)  # (B, 1, R, s): keys that exist and are not padding
        # block abstractions: mean key (+ log of its size), values weighted by q(j | block)
        count = ok.sum(-1).clamp_min(1)  # (B, 1, R)
        k_region = (kb * ok[..., None]).sum(-2) / count[..., None]  # (B, H, R, D)
        inner = torch.einsum("bhrsd,hd->bhrs", kb, self.w.to(kb.dtype)).masked_fill(~ok, float("-inf"))
        within = torch.nan_to_num(inner.softmax(-1))  # an empty block: no weight
        v_region = torch.einsum("bhrs,bhrsd->bhrd", within, vb)  # (B, H, R, D)
        # direct scores within the block (B, H, R, s, s) and region scores (B, H, R, s, R)
        direct = torch.matmul(qb, kb.transpose(-2, -1)) * scale
        allowed = ok[:, :, :, None, :].expand(b, 1, n_blocks, s, s)
        if causal:
            allowed = allowed & torch.ones(s, s, dtype=torch.bool, device=q.device).tril()
        direct = direct.masked_fill(~allowed, float("-inf"))
        region = torch.einsum("bhrsd,bhRd->bhrsR", qb, k_region) * scale + count.log()[:, :, None, None, :]
        rid = torch.arange(n_blocks, device=q.device)
        other = (rid[None, :] < rid[:, None]) if causal else (rid[None, :] != rid[:, None])  # (R query, R key)
        region_ok = other[None, None, :, None, :] & (ok.any(-1))[:, :, None, None, :]
        region = region.masked_fill(~region_ok, float("-inf"))
        p = torch.cat([direct, region], -1).float().softmax(-1).to(v.dtype)  # one softmax over both
        out = torch.matmul(p[..., :s], vb) + torch.einsum("bhrsR,bhRd->bhrsd", p[..., s:], v_region)
        return out.reshape(b, h, n_blocks * s, d)[:, :, :t]
