"""Informer's ProbSparse self-attention (Zhou et al. 2021)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from ...config import Config
from ..base import ATTENTION, WITHOUT_BIAS, Attention
from ..masks import padding_bias
from .linear import zero_padding


@ATTENTION.register("probsparse")
class ProbSparse(Attention):
    """Informer ProbSparse (Zhou et al. 2021): full attention for the top u = c ln L queries, mean(V) for the rest."""

    class Params(Config):
        factor: float = Field(5.0, gt=0, description="Informer's c: u = c ln L queries, c ln L sampled keys")
        top_u: int = Field(0, ge=0, description="fixed u (0: c ln L)")

    supports_causal: ClassVar[bool] = False
    accepts = WITHOUT_BIAS

    def why_not_causal(self) -> str:
        return "its top-u query selection compares queries across the whole sequence"

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        b, h, tq, d = q.shape
        tk = k.shape[-2]
        scale = 1.0 / math.sqrt(d) if scale is None else scale
        c = self.params.factor
        n_sample = min(tk, int(c * math.ceil(math.log(tk + 1))))
        u = min(tq, self.params.top_u or int(c * math.ceil(math.log(tq + 1))))
        idx = torch.randint(tk, (tq, n_sample), device=q.device)  # sampled keys per query
        k_sample = k[:, :, idx]  # (B, H, Tq, S, D)
        qk = torch.einsum("bhqd,bhqsd->bhqs", q, k_sample) * scale
        real = torch.ones(b, tk, dtype=torch.bool, device=q.device) if key_padding is None else ~key_padding
        n_real = real.sum(dim=-1).clamp(min=1)[:, None, None]  # (B, 1, 1)
        sampled_real = real[:, idx][:, None]  # (B, 1, Tq, S)
        # M(q) = max - mean over the sampled real keys (Informer eq. 4)
        sparsity = (qk.masked_fill(~sampled_real, float("-inf")).amax(dim=-1)
                    - qk.masked_fill(~sampled_real, 0.0).sum(dim=-1) / n_real)
        top = sparsity.topk(u, dim=-1).indices  # (B, H, u)
        v_real = zero_padding(v, key_padding)
        out = (v_real.sum(dim=-2, keepdim=True) / n_real[..., None]).expand(b, h, tq, d).clone()  # lazy: mean(V)
        q_top = torch.gather(q, 2, top[..., None].expand(b, h, u, d))
        scores = q_top @ k.transpose(-2, -1) * scale  # (B, H, u, Tk)
        if key_padding is not None:
            scores = padding_bias(key_padding, scores.dtype, scores)
        attn = torch.softmax(scores, dim=-1) @ v  # (B, H, u, D)
        out.scatter_(2, top[..., None].expand(b, h, u, d), attn)
        return out
