"""The position features of Chiang & Cholak's PARITY models: i / n and cos(i pi), mapped to the width."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from .base import ENCODINGS, Kind, PEDims, PositionalEncoding


@ENCODINGS.register("parity_features")
class ParityFeatures(PositionalEncoding):
    """PE(i) = W [i / n, cos(i pi)] with n the sequence length and W learned (Chiang & Cholak 2022, sec. 5 and
    their PARITY code): the features their exact PARITY construction reads."""

    kind: ClassVar[Kind] = "additive"

    def __init__(self, params: object, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.proj = nn.Linear(2, dims.d_model, bias=False)

    def embed(self, positions: Tensor) -> Tensor:
        p = positions.float()
        n = float(positions.max()) + 1.0 if positions.numel() else 1.0
        feats = torch.stack((p / n, torch.cos(p * math.pi)), dim=-1)  # (T, 2)
        return self.proj(feats.to(self.proj.weight.dtype))  # (T, d)
