"""Universal RPE-based attention (Luo et al. 2022, "Your Transformer May Not be as Powerful as You Expect")."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from ...config import Config
from ..backends import attention_weights
from ..base import ATTENTION, Attention, AttnDims


@ATTENTION.register("urpe")
class URPE(Attention):
    """URPE (Luo et al. 2022, eq. 5): (softmax(QK^T / sqrt(d) + B) * C) V, where B is the relative bias of the
    model's encoding (T5, ALiBi, ...) and C a learnable Toeplitz matrix per head, C_ij = c_h(i - j), started
    at ones (ordinary attention). Materializes the scores (C multiplies the probabilities)."""

    class Params(Config):
        max_distance: int = Field(0, ge=0, description="|i - j| beyond this shares the last entry (0: max_len)")

    def __init__(self, params: Params, dims: AttnDims) -> None:
        super().__init__(params, dims)
        self.r = params.max_distance or dims.max_len
        # (H * (2R - 1),): c_h(-R+1 .. R-1) per head, kept 1-D so that weight decay (matrices only) leaves it
        self.c_flat = nn.Parameter(torch.ones(dims.n_heads * (2 * self.r - 1)))

    @property
    def c(self) -> Tensor:
        return self.c_flat.view(self.dims.n_heads, 2 * self.r - 1)  # (H, 2R - 1)

    def toeplitz(self, tq: int, tk: int, device: torch.device) -> Tensor:
        """C (H, Tq, Tk) with C_ij = c_h(i - j) (queries aligned to the last keys)."""
        i = torch.arange(tq, device=device)[:, None] + tk - tq
        rel = (i - torch.arange(tk, device=device)[None, :]).clamp(-(self.r - 1), self.r - 1) + self.r - 1
        return self.c[:, rel]  # (H, Tq, Tk)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        alpha = attention_weights(q, k, bias=bias, causal=causal, scale=scale, key_padding=key_padding)
        p = alpha * self.toeplitz(q.shape[-2], k.shape[-2], q.device).to(alpha.dtype)  # (B, H, Tq, Tk)
        return torch.matmul(p, v)  # (B, H, Tq, D)
