"""Learned absolute positions (GPT / BERT): the only encoding with a maximum length."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor, nn

from ..config import Config
from .base import ENCODINGS, Kind, PEDims, PositionalEncoding


@ENCODINGS.register("learned")
class Learned(PositionalEncoding):
    """Learned absolute positions (GPT/BERT style): a table of max_len vectors."""

    class Params(Config):
        max_len: int = Field(4096, ge=1, description="table size: the longest position + 1")

    kind: ClassVar[Kind] = "additive"

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.max_positions = params.max_len
        self.table = nn.Embedding(params.max_len, dims.d_model)
        nn.init.normal_(self.table.weight, std=dims.d_model ** -0.5)  # the scale of sqrt(d)-scaled tokens

    def embed(self, positions: Tensor) -> Tensor:
        self.check_positions(positions)
        return self.table(positions.long())  # (T, d)
