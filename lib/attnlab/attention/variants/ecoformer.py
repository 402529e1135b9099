"""EcoFormer (Liu et al. 2022, "EcoFormer: Energy-Saving Attention with Linear Complexity").

Queries and keys are mapped to b-bit binary codes h(x) = sign(A^T phi(x)) by kernelized hash functions:
phi(x) is an RBF kernel against m anchor points (centred), A is learned as in kernel-based supervised
hashing -- self-supervised by the attention map: for each query, its most attended keys are similar
pairs (+1) and its least attended dissimilar (-1), and A minimises (h_q . h_k / b - S)^2 over those
pairs with tanh standing in for sign (fitted every `refit_every` training passes on that pass's
batch, for the passes after it; before the first fit the hash is random). Attention then weighs key j for query i by the number of agreeing bits, (h_i . h_j + b) / 2,
the inner product of the features [h, sqrt(b)] / sqrt(2): linear attention over binary codes, O(n b).
The hash is not differentiable: q and k get no gradient through it (as the paper's binarised codes).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from ...config import Config
from ..base import ATTENTION, WITHOUT_BIAS, Attention, AttnDims
from ..masks import causal_mask
from .linear import linear_attention, zero_padding


@ATTENTION.register("ecoformer")
class EcoFormer(Attention):
    """EcoFormer (Liu et al. 2022): kernelized hashing to b-bit codes learned from the attention map; linear time."""

    class Params(Config):
        bits: int = Field(16, ge=1, description="code length b")
        anchors: int = Field(32, ge=1, description="anchor points m of the RBF kernel")
        pairs: int = Field(4, ge=1, description="per query: most / least attended keys taken as similar / dissimilar")
        refit_every: int = Field(100, ge=0, description="training passes between fits of the hash, each from the last "
                                 "pass's attention map (0: never; the random initial hash)")
        fit_steps: int = Field(100, ge=1, description="optimisation steps of one fit")
        seed: int = Field(0, ge=0)

    accepts = WITHOUT_BIAS

    def __init__(self, params: Params, dims: AttnDims) -> None:
        super().__init__(params, dims)
        h, m, b, d = dims.n_heads, params.anchors, params.bits, dims.head_dim
        g = torch.Generator().manual_seed(params.seed)
        # before the first fit: a random kernel hash (anchors ~ N(0, I), the width of their typical distance)
        self.register_buffer("anchor", torch.randn(h, m, d, generator=g))
        self.register_buffer("centre", torch.zeros(h, m))
        self.register_buffer("width", torch.full((h,), math.sqrt(2 * d)))
        self.register_buffer("proj", torch.randn(h, m, b, generator=g))
        self.register_buffer("passes", torch.zeros((), dtype=torch.long))  # training passes so far

    def kernel_features(self, x: Tensor) -> Tensor:
        """Centred RBF features exp(-|x - a|^2 / 2 w^2) against the anchors: (B, H, T, m)."""
        d2 = ((x.float()[:, :, :, None, :] - self.anchor[None, :, None]) ** 2).sum(-1)
        return torch.exp(-d2 / (2 * self.width[None, :, None, None] ** 2)) - self.centre[None, :, None]

    def codes(self, x: Tensor) -> Tensor:
        """b-bit codes in {-1, +1}: sign(A^T phi(x)), (B, H, T, b)."""
        z = torch.einsum("bhtm,hmc->bhtc", self.kernel_features(x), self.proj)
        return torch.where(z >= 0, 1.0, -1.0).to(x.dtype)

    @torch.no_grad()
    def fit_hash(self, q: Tensor, k: Tensor, causal: bool) -> float:
        """Learn the hash from this batch's attention map (kernel-based supervised hashing, relaxed by tanh);
        returns the final loss."""
        b_, h, t, d = q.shape
        g = torch.Generator().manual_seed(self.params.seed + int(self.passes))
        pool = torch.cat([q, k], 2).float().transpose(0, 1).reshape(h, -1, d)  # (H, 2BT, D)
        pick = torch.randint(pool.shape[1], (self.params.anchors,), generator=g)
        self.anchor.copy_(pool[:, pick])
        dist = ((pool[:, :, None] - self.anchor[:, None]) ** 2).sum(-1).sqrt()  # (H, 2BT, m)
        self.width.copy_(dist.mean(dim=(1, 2)).clamp_min(1e-3))
        self.centre.zero_()
        self.centre.copy_(self.kernel_features(torch.cat([q, k], 2)).mean(dim=(0, 2)))
        s = torch.matmul(q.float(), k.float().transpose(-2, -1)) / math.sqrt(d)  # the attention map's order
        if causal:
            s = s.masked_fill(~causal_mask(t, t, q.device), float("-inf"))
        n = min(self.params.pairs, t)
        similar = s.topk(n, dim=-1).indices  # (B, H, T, n)
        dissimilar = s.masked_fill(torch.isinf(s), float("inf")).topk(n, dim=-1, largest=False).indices
        fq, fk = self.kernel_features(q), self.kernel_features(k)  # (B, H, T, m)
        pairs = torch.cat([similar, dissimilar], -1)  # (B, H, T, 2n)
        target = torch.cat([torch.ones_like(similar), -torch.ones_like(dissimilar)], -1).float()
        fk_pairs = fk.gather(2, pairs.flatten(2)[..., None].expand(-1, -1, -1, fk.shape[-1])).unflatten(
            2, pairs.shape[2:])  # (B, H, T, 2n, m)
        proj = self.proj.clone().requires_grad_()
        opt = torch.optim.Adam([proj], lr=0.05)
        loss = torch.tensor(0.0)
        with torch.enable_grad():
            for _ in range(self.params.fit_steps):
                hq = torch.tanh(torch.einsum("bhtm,hmc->bhtc", fq, proj))  # (B, H, T, b)
                hk = torch.tanh(torch.einsum("bhtpm,hmc->bhtpc", fk_pairs, proj))  # (B, H, T, 2n, b)
                affinity = (hq[..., None, :] * hk).sum(-1) / self.params.bits  # (B, H, T, 2n)
                loss = ((affinity - target) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.proj.copy_(proj.detach())
        return float(loss)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        out = linear_attention(self.features(q), zero_padding(self.features(k), key_padding), v, causal)
        if self.training and torch.is_grad_enabled():
            self.passes += 1
            every = self.params.refit_every
            if every and int(self.passes) % every == 0:  # from this batch's attention map, for the next passes:
                self.fit_hash(q.detach(), k.detach(), causal)  # no output depends on its own batch's hash fit
        return out

    def features(self, x: Tensor) -> Tensor:
        """[h(x), sqrt(b)] / sqrt(2): their inner product counts the agreeing bits, (h_i . h_j + b) / 2."""
        return torch.cat([self.codes(x), torch.full_like(x[..., :1], math.sqrt(self.params.bits))], -1) / math.sqrt(2)
