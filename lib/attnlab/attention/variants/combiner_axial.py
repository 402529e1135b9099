"""Combiner-Axial (Ren et al. 2021, "Combiner: Full Attention Transformer with Sparse Computation Cost").

The sequence is laid out row-major in a grid of rows of `row` positions (about sqrt(n) of them). Query
i = (r, c) attends directly to the keys of its own row (those up to itself when causal) and reaches every
other row r' (every earlier one when causal) through one abstraction taken at the same column,
position (r', c): its value is the full attention of that position over row r',
sum_j softmax_j(q_(r',c) . k_j / sqrt(d)) v_j, i.e. q(j | row r') comes from the query at (r', c), and
its key is either the same attention-weighted sum of the row's keys (`summary: wsum`) or the key at
(r', c) itself (`summary: key`; the row's mean key where (r', c) is padding): the two parameter-free
row summaries of the official code (TensorFlow `axial_rowmajor`, `row_summary` wsum / none). Its LM
configuration uses `proj` instead, a learned projection of the row's output with a residual from the
layer input and a LayerNorm; an attention here receives q, k and v, not the layer input, so that one
is not offered. One softmax runs over the direct keys and the row abstractions together. Every key
a query may see is reachable; with rows of one position, or one row holding the whole sequence, it is
exact softmax attention. The cost is O(n (row + n / row)).
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


@ATTENTION.register("combiner_axial")
class CombinerAxial(Attention):
    """Combiner-Axial (Ren et al. 2021): direct attention in a row, other rows by their abstraction at its column."""

    class Params(Config):
        row: int = Field(16, ge=1, description="row length m of the grid (about sqrt(n) for O(n sqrt(n)) cost)")
        summary: Literal["wsum", "key"] = Field("wsum", description="a row abstraction's key: the attention-"
                                                "weighted keys of the row (wsum) or the key at that position (key)")

    accepts = WITHOUT_BIAS

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        b, h, t, d = q.shape
        if k.shape[-2] != t:
            raise ValueError("combiner_axial: queries and keys must have the same length")
        scale = 1.0 / math.sqrt(d) if scale is None else scale
        s = self.params.row
        n_rows = -(-t // s)
        pad = n_rows * s - t
        real = torch.ones(b, t, dtype=torch.bool, device=q.device) if key_padding is None else ~key_padding
        ok = F.pad(real, (0, pad)).view(b, 1, n_rows, s)  # (B, 1, R, s): positions that exist, not padding
        # a position that is not a real token takes part with a zero query (its row's mean): the output at
        # the real positions does not depend on what padding holds
        qr = F.pad(q, (0, 0, 0, pad)).view(b, h, n_rows, s, d) * ok[..., None]  # (B, H, R, s, D)
        kr, vr = (F.pad(x, (0, 0, 0, pad)).view(b, h, n_rows, s, d) for x in (k, v))
        logits = torch.matmul(qr, kr.transpose(-2, -1)) * scale  # (B, H, R, s query col, s key col)
        keys_ok = ok[:, :, :, None, :]  # (B, 1, R, 1, s)
        # row abstractions seen from column c: the full attention of (r', c) over row r'
        p_row = torch.nan_to_num(logits.masked_fill(~keys_ok, float("-inf")).float().softmax(-1)).to(v.dtype)
        v_sum = torch.matmul(p_row, vr)  # (B, H, R, s, D)
        k_sum = torch.matmul(p_row, kr)  # (B, H, R, s, D); at a position that is no real token: the mean key
        if self.params.summary == "key":
            k_sum = torch.where(ok[..., None], kr, k_sum)
        # direct scores within the row
        allowed = keys_ok.expand(b, 1, n_rows, s, s)
        if causal:
            allowed = allowed & torch.ones(s, s, dtype=torch.bool, device=q.device).tril()
        direct = logits.masked_fill(~allowed, float("-inf"))
        # the other rows, each through its abstraction at the query's column: (B, H, R, s, R')
        region = torch.einsum("bhrcd,bhRcd->bhrcR", qr, k_sum) * scale
        rid = torch.arange(n_rows, device=q.device)
        other = (rid[None, :] < rid[:, None]) if causal else (rid[None, :] != rid[:, None])  # (R, R')
        row_ok = ok.any(-1)[:, :, None, None, :]  # (B, 1, 1, 1, R'): the row has a real key
        region = region.masked_fill(~(other[None, None, :, None, :] & row_ok), float("-inf"))
        p = torch.cat([direct, region], -1).float().softmax(-1).to(v.dtype)  # one softmax over both
        out = torch.matmul(p[..., :s], vr) + torch.einsum("bhrcR,bhRcd->bhrcd", p[..., s:], v_sum)
        return out.reshape(b, h, n_rows * s, d)[:, :, :t]
