"""Learned-kernel attention (Chowdhury et al. 2021, "On Learning the Transformer Kernel"): GMM-PRF.

Performer's positive random features phi(x) = exp(w.x - |x|^2/2) draw w from N(0, I), which makes
phi(q).phi(k) an estimate of the softmax kernel exp(q.k). KL-Transformer learns the spectral
distribution instead: here the paper's Gaussian-mixture variant with positive features, w = mu_c +
sigma_c * eps (the reparameterisation; eps fixed at construction), C components with learned means,
scales and mixture weights pi_c. At initialisation (mu = 0, sigma = 1, equal weights) it is Performer
with i.i.d. features; training moves the kernel away from softmax's.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from ...config import Config
from ..base import ATTENTION, WITHOUT_BIAS, Attention, AttnDims
from .linear import linear_attention, zero_padding


@ATTENTION.register("learned_kernel")
class LearnedKernel(Attention):
    """GMM positive random features with a learned spectral distribution (Chowdhury et al. 2021, GMM-PRF)."""

    class Params(Config):
        features: int = Field(64, ge=1, description="random features m in all (m / components per component)")
        components: int = Field(2, ge=1, description="Gaussian components C of the spectral distribution")
        seed: int = Field(0, ge=0, description="seed of the fixed noise eps")

        @model_validator(mode="after")
        def _split(self) -> LearnedKernel.Params:
            if self.features % self.components:
                raise ValueError(f"features = {self.features}: must be a multiple of components = {self.components}")
            return self

    accepts = WITHOUT_BIAS

    def __init__(self, params: Params, dims: AttnDims) -> None:
        super().__init__(params, dims)
        c, d = params.components, dims.head_dim
        per = params.features // c
        g = torch.Generator().manual_seed(params.seed)
        self.register_buffer("eps", torch.randn(c, per, d, generator=g))  # (C, m/C, D)
        self.mu = nn.Parameter(torch.zeros(c, d))  # component means
        self.log_sigma = nn.Parameter(torch.zeros(c, d))  # component scales (diagonal), log
        self.logit_pi = nn.Parameter(torch.zeros(c))  # mixture weights, softmax

    def spectral_samples(self) -> Tensor:
        """w = mu_c + sigma_c * eps for every component: (m, D)."""
        return (self.mu[:, None, :] + self.log_sigma.exp()[:, None, :] * self.eps).reshape(-1, self.eps.shape[-1])

    def phi(self, x: Tensor, per_row: bool = False) -> Tensor:
        """sqrt(pi_c / m_c) exp(w.x - |x|^2 / 2) over every sample w of every component: (B, H, T, m)."""
        x = x * self.dims.head_dim ** -0.25  # at initialisation phi(q).phi(k) estimates exp(q.k / sqrt(d))
        w = self.spectral_samples().to(x.dtype)
        expo = torch.einsum("bhnd,md->bhnm", x, w) - (x ** 2).sum(dim=-1, keepdim=True) / 2
        # a constant per query row cancels in the ratio; for keys it must be the same for every key and not
        # look at the data (causality): w.x - |x|^2/2 <= |w|^2/2, so max |w|^2/2 bounds the exponent by 0
        stab = expo.amax(dim=-1, keepdim=True) if per_row else (w ** 2).sum(dim=1).max() / 2
        per = self.eps.shape[1]
        weight = (self.logit_pi.softmax(0) / per).sqrt().repeat_interleave(per).to(x.dtype)  # (m,)
        return torch.exp(expo - stab.detach()) * weight

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        return linear_attention(self.phi(q, per_row=True), zero_padding(self.phi(k), key_padding), v, causal)
