"""Linear attention (Katharopoulos et al. 2020) and the prefix-sum kernel Performer shares."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import ATTENTION, WITHOUT_BIAS, Attention


def zero_padding(x: Tensor, key_padding: Tensor | None) -> Tensor:
    """x (B, H, T, ...) with the rows of padding positions (key_padding (B, T) True) set to 0."""
    return x if key_padding is None else x.masked_fill(key_padding[:, None, :, None], 0.0)


def linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, causal: bool, eps: float = 1e-30) -> Tensor:
    """out_i = phi(q_i) S_i / phi(q_i) z_i with S = sum phi(k_j) v_j^T, z = sum phi(k_j) (prefix sums if causal)
    (Katharopoulos et al. 2020, eq. 5-6)."""
    if not causal:
        kv = torch.einsum("bhnm,bhnd->bhmd", phi_k, v)  # (B, H, M, D)
        z = phi_k.sum(dim=-2)  # (B, H, M)
        num = torch.einsum("bhnm,bhmd->bhnd", phi_q, kv)
        den = torch.einsum("bhnm,bhm->bhn", phi_q, z)[..., None]
        return num / den.clamp_min(eps)
    kv = torch.einsum("bhnm,bhnd->bhnmd", phi_k, v).cumsum(dim=2)  # (B, H, T, M, D) prefix sums
    z = phi_k.cumsum(dim=2)  # (B, H, T, M)
    num = torch.einsum("bhnm,bhnmd->bhnd", phi_q, kv)
    den = (phi_q * z).sum(dim=-1, keepdim=True)
    return num / den.clamp_min(eps)


@ATTENTION.register("linear")
class LinearAttention(Attention):
    """Linear attention (Katharopoulos et al. 2020): feature map elu(x) + 1; causal via cumulative sums."""

    accepts = WITHOUT_BIAS

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        return linear_attention(F.elu(q) + 1, zero_padding(F.elu(k) + 1, key_padding), v, causal)
