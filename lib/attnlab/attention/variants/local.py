"""Sliding-window (local) attention (Beltagy et al. 2020, Longformer's local part)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ...config import Config
from ..backends import flex_attention_backend
from ..base import ATTENTION, Attention
from ..masks import padding_bias


@ATTENTION.register("local")
class LocalAttention(Attention):
    """Sliding-window attention (Beltagy et al. 2020): query i sees keys with |i - j| <= window."""

    class Params(Config):
        window: int = Field(64, ge=1, description="keys within this distance")

    def band(self, t: int, device: torch.device, causal: bool) -> Tensor:
        """(T, T) True where key j is within the window of query i (and not after it if causal)."""
        i = torch.arange(t, device=device)
        rel = i[:, None] - i[None, :]  # (T, T) query - key
        ok = rel.abs() <= self.params.window
        return ok & (rel >= 0) if causal else ok

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        if key_padding is not None:
            bias = padding_bias(key_padding, q.dtype, bias)
        if bias is None and (q.device.type == "cuda" or not torch.is_grad_enabled()):
            # the window as a FlexAttention block mask: blocks outside the band are skipped, O(T w)
            return flex_attention_backend(q, k, v, causal=causal, scale=scale, window=self.params.window)
        m = self.band(q.shape[-2], q.device, causal)  # (T, T): materialized band
        if bias is not None:
            m = bias.to(q.dtype).masked_fill(~m, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scale)
