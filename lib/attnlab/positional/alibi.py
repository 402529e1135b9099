"""ALiBi: attention with linear biases (Press et al. 2022)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import ENCODINGS, Kind, PEDims, PositionalEncoding, ScoreMod, relative_fn


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi head slopes (Press et al. 2022, section 3): 2^(-8k/n), interleaved for non-powers of 2."""
    if n_heads < 1:
        raise ConfigError(f"n_heads = {n_heads}: must be >= 1")

    def pow2(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (k + 1) for k in range(n)]

    c = 2 ** math.floor(math.log2(n_heads))
    slopes = pow2(c)
    if c != n_heads:
        slopes += pow2(2 * c)[0::2][: n_heads - c]
    return torch.tensor(slopes, dtype=torch.float32)


@ENCODINGS.register("alibi")
class ALiBi(PositionalEncoding):
    """ALiBi (Press et al. 2022): bias -m_h * |i - j|, not scaled by 1/sqrt(d)."""

    kind: ClassVar[Kind] = "bias"

    def __init__(self, params: PositionalEncoding.Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.register_buffer("slopes", alibi_slopes(dims.n_heads), persistent=False)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        dist = (q_pos[:, None] - k_pos[None, :]).abs().float()  # (Tq, Tk)
        return -self.slopes[:, None, None] * dist[None]  # (H, Tq, Tk)

    def score_mod(self, q_pos: Tensor, k_pos: Tensor) -> ScoreMod:
        """The same bias as a FlexAttention score_mod (never materialized)."""
        slopes, rel = self.slopes, relative_fn(q_pos, k_pos)

        def mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            return score - slopes[h] * rel(qi, ki).abs()

        return mod
