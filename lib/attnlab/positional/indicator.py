"""An indicator of one position (Chiang & Cholak 2022, FIRST: the only position information the task needs)."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from ..config import Config
from .base import ENCODINGS, Kind, PEDims, PositionalEncoding


@ENCODINGS.register("indicator")
class Indicator(PositionalEncoding):
    """A learned vector added at one position only (Chiang & Cholak 2022, sec. 5, FIRST): PE(i) = [i = p] w.
    With the read-out symbol at position 0, p = 1 marks the first input symbol."""

    class Params(Config):
        position: int = Field(1, ge=0, description="the marked position")

    kind: ClassVar[Kind] = "additive"

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.vector = nn.Parameter(torch.randn(dims.d_model))  # (d,)

    def embed(self, positions: Tensor) -> Tensor:
        hit = (positions == self.params.position).to(self.vector.dtype)  # (T,)
        return hit[:, None] * self.vector[None, :]  # (T, d)

