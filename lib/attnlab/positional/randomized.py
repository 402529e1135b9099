"""Randomized positional encodings (Ruoss et al. 2023): a wrapper around any other encoding."""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import Tensor

from ..config import Config
from .base import (
    ENCODINGS,
    PEDims,
    PESpec,
    PositionalEncoding,
    Rotation,
    ScoreMod,
    build_encoding,
    score_mod_of,
)


@ENCODINGS.register("randomized")
class Randomized(PositionalEncoding):
    """Randomized positions (Ruoss et al. 2023): n sorted distinct positions from [0, L_max) per pass."""

    class Params(Config):
        base: PESpec = Field("rope", description="the encoding whose positions are randomized")
        max_len: int = Field(4096, ge=1, description="L_max: positions are drawn from [0, max_len)")

        @field_validator("base")
        @classmethod
        def _not_nested(cls, v: PESpec) -> PESpec:
            if v.name == "randomized":
                raise ValueError("the randomized wrapper needs another encoding to wrap, e.g. rope")
            return v

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.base = build_encoding(params.base, dims)
        self.kind = self.base.kind  # type: ignore[misc]  # same interface as the wrapped encoding
        self.query_dependent = self.base.query_dependent  # type: ignore[misc]
        self.key_dependent = self.base.key_dependent  # type: ignore[misc]
        self.max_positions = params.max_len

    def default_positions(self, length: int, device: torch.device | str = "cpu",
                          generator: torch.Generator | None = None) -> Tensor:
        """Sorted distinct positions drawn uniformly from [0, max_len), at training and test time."""
        if length > self.params.max_len:
            raise ValueError(f"randomized: sequence length {length} exceeds max_len = {self.params.max_len}")
        return torch.randperm(self.params.max_len, generator=generator)[:length].sort().values.to(device)

    def embed(self, positions: Tensor) -> Tensor:
        return self.base.embed(positions)  # type: ignore[attr-defined]

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        return self.base.bias(q_pos, k_pos)  # type: ignore[attr-defined]

    def rotation(self, positions: Tensor) -> Rotation:
        return self.base.rotation(positions)  # type: ignore[attr-defined]

    def score_mod(self, q_pos: Tensor, k_pos: Tensor) -> ScoreMod | None:
        return score_mod_of(self.base, q_pos, k_pos)
