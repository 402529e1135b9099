"""KERPLE: kernelized relative positional embedding (Chi et al. 2022)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from ..config import Config
from .base import ENCODINGS, Kind, PEDims, PositionalEncoding, ScoreMod, relative_fn


@ENCODINGS.register("kerple")
class Kerple(PositionalEncoding):
    """KERPLE (Chi et al. 2022): log -p*log(1+a|i-j|) or power -p*|i-j|^a, p, a > 0 per head."""

    class Params(Config):
        variant: Literal["log", "power"] = "log"

    kind: ClassVar[Kind] = "bias"
    eps: ClassVar[float] = 1e-2

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.log = params.variant == "log"
        self.p = nn.Parameter(torch.rand(dims.n_heads) * 2 + self.eps)
        a0 = torch.rand(dims.n_heads) * (1.0 if self.log else 2.0)
        self.a = nn.Parameter(a0.clamp(min=self.eps, max=2.0 - self.eps))

    def _kernel(self, p: Tensor, a: Tensor, dist: Tensor) -> Tensor:
        if self.log:
            return -p * torch.log1p(a * dist)
        return -p * dist.clamp(min=1e-6).pow(a) * (dist > 0)

    def _pa(self) -> tuple[Tensor, Tensor]:
        return self.p.clamp(min=self.eps), self.a.clamp(min=self.eps, max=None if self.log else 2.0)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        dist = (q_pos[:, None] - k_pos[None, :]).abs().float()[None]  # (1, Tq, Tk)
        p, a = self._pa()
        return self._kernel(p[:, None, None], a[:, None, None], dist)  # (H, Tq, Tk)

    def score_mod(self, q_pos: Tensor, k_pos: Tensor) -> ScoreMod:
        """The same bias (log or power variant) as a FlexAttention score_mod (never materialized)."""
        (p, a), rel = self._pa(), relative_fn(q_pos, k_pos)

        def mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            return score + self._kernel(p[h], a[h], rel(qi, ki).abs().float())

        return mod
