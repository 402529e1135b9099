"""Performer FAVOR+ (Choromanski et al. 2021): positive orthogonal random features."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from ...config import Config
from ..base import ATTENTION, WITHOUT_BIAS, Attention, AttnDims
from .linear import linear_attention, zero_padding


def orthogonal_gaussian(m: int, d: int, generator: torch.Generator | None = None) -> Tensor:
    """m x d random features: blocks of orthogonal rows, norms chi-distributed (Choromanski et al. 2021)."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        g = torch.randn(d, d, generator=generator)
        qm, _ = torch.linalg.qr(g)
        blocks.append(qm.T)
    w = torch.cat(blocks)[:m]
    norms = torch.randn(m, d, generator=generator).norm(dim=1)
    return w * norms[:, None]


@ATTENTION.register("performer")
class Performer(Attention):
    """Performer FAVOR+ (Choromanski et al. 2021): positive orthogonal random features."""

    class Params(Config):
        features: int = Field(64, ge=1, description="random features m")
        seed: int = Field(0, ge=0, description="seed of the random features")

    accepts = WITHOUT_BIAS

    def __init__(self, params: Params, dims: AttnDims) -> None:
        super().__init__(params, dims)
        w = orthogonal_gaussian(params.features, dims.head_dim, torch.Generator().manual_seed(params.seed))
        self.register_buffer("w", w)
        # w.x - |x|^2/2 <= |w|^2/2 for every x: subtracting max |w|^2/2 bounds the exponent by 0 without
        # looking at the data, so the stabiliser is the same constant for every key (and stays causal)
        self.register_buffer("shift", (w ** 2).sum(dim=1).max() / 2)

    def phi(self, x: Tensor, per_row: bool = False) -> Tensor:
        """exp(w.x - |x|^2 / 2) / sqrt(m) (FAVOR+ positive features, up to a constant that cancels)."""
        x = x * self.dims.head_dim ** -0.25  # so that phi(q).phi(k) estimates exp(q.k / sqrt(d))
        expo = torch.einsum("bhnd,md->bhnm", x, self.w.to(x.dtype)) - (x ** 2).sum(dim=-1, keepdim=True) / 2
        expo = expo - (expo.amax(dim=-1, keepdim=True).detach() if per_row else self.shift)
        return torch.exp(expo) / math.sqrt(self.w.shape[0])

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        # a per-query constant cancels between numerator and denominator of that query
        return linear_attention(self.phi(q, per_row=True), zero_padding(self.phi(k), key_padding), v, causal)
