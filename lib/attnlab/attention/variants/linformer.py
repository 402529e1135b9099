"""Linformer (Wang et al. 2020): keys and values projected along the length."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ...config import Config
from ..base import ATTENTION, WITHOUT_BIAS, Attention, AttnDims
from .linear import zero_padding


@ATTENTION.register("linformer")
class Linformer(Attention):
    """Linformer (Wang et al. 2020): keys and values projected along length by k x n matrices E, F."""

    class Params(Config):
        k: int = Field(64, ge=1, description="projected length k")

    supports_causal: ClassVar[bool] = False
    accepts = WITHOUT_BIAS

    def why_not_causal(self) -> str:
        return "projecting keys along the length mixes future positions into every key"

    def __init__(self, params: Params, dims: AttnDims) -> None:
        super().__init__(params, dims)
        k, n = params.k, dims.max_len
        self.E = nn.Parameter(torch.randn(k, n) / math.sqrt(k))  # shared across heads
        self.F = nn.Parameter(torch.randn(k, n) / math.sqrt(k))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        t = k.shape[-2]
        if t > self.dims.max_len:
            raise ValueError(f"linformer: sequence length {t} exceeds its projection length {self.dims.max_len}")
        k, v = zero_padding(k, key_padding), zero_padding(v, key_padding)  # padding adds nothing to E k, F v
        kp = torch.einsum("kn,bhnd->bhkd", self.E[:, :t], k)  # (B, H, k, D)
        vp = torch.einsum("kn,bhnd->bhkd", self.F[:, :t], v)  # (B, H, k, D)
        return F.scaled_dot_product_attention(q, kp, vp, scale=scale)
