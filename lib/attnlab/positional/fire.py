"""FIRE: functional interpolation for relative positions (Li et al. 2024)."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from ..config import Config
from .base import ENCODINGS, Kind, PEDims, PositionalEncoding, ScoreMod, position_fn, relative_fn


@ENCODINGS.register("fire")
class FIRE(PositionalEncoding):
    """FIRE (Li et al. 2024): f(psi(i-j) / psi(max(L, i))), psi(x) = log(c|x| + 1), f an MLP."""

    class Params(Config):
        hidden: int = Field(32, ge=1, description="width of the MLP f (1 -> hidden -> heads)")
        threshold: float = Field(1.0, gt=0, description="initial value of the learned L")

    kind: ClassVar[Kind] = "bias"

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.mlp = nn.Sequential(nn.Linear(1, params.hidden), nn.ReLU(), nn.Linear(params.hidden, dims.n_heads))
        self.c = nn.Parameter(torch.tensor(1.0))
        self.threshold = nn.Parameter(torch.tensor(float(params.threshold)))

    def psi(self, x: Tensor) -> Tensor:
        return torch.log(self.c.abs() * x.abs() + 1.0)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        rel = (q_pos[:, None] - k_pos[None, :]).abs().float()  # (Tq, Tk)
        norm = self.psi(torch.maximum(self.threshold.abs(), q_pos.float()))[:, None]  # (Tq, 1)
        x = self.psi(rel) / norm.clamp(min=1e-6)  # (Tq, Tk), in [0, 1] for causal pairs
        return self.mlp(x[..., None]).permute(2, 0, 1)  # (H, Tq, Tk)

    def score_mod(self, q_pos: Tensor, k_pos: Tensor) -> ScoreMod:
        """The same bias as a FlexAttention score_mod: the MLP (1 -> hidden -> H) unrolled per score."""
        rel, qpos = relative_fn(q_pos, k_pos), position_fn(q_pos)
        w1, b1 = self.mlp[0].weight[:, 0], self.mlp[0].bias  # (hidden,)
        w2, b2 = self.mlp[2].weight, self.mlp[2].bias  # (H, hidden), (H,)
        c, thr, hidden = self.c.abs(), self.threshold.abs(), w1.numel()

        def mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            norm = torch.log(c * torch.maximum(thr, qpos(qi).float()) + 1.0).clamp(min=1e-6)
            x = torch.log(c * rel(qi, ki).abs().float() + 1.0) / norm
            out = b2[h]
            for u in range(hidden):
                out = out + w2[h, u] * torch.relu(w1[u] * x + b1[u])
            return score + out

        return mod
