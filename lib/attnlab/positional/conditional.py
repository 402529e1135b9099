"""Conditional positional encoding (Chu et al. 2023, "Conditional Positional Encodings for Vision Transformers").

A position encoding generator (PEG): a depthwise convolution over the sequence, zero-padded, whose
output is added to the token features after the first block. Position enters only through the zero
padding at the borders and the local neighbourhood, so the encoding is translation-equivariant and
defined for any length. In 1-D: symmetric padding in encoders, left padding (k - 1 zeros) in
decoders, so that position t sees only tokens <= t.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..config import Config
from .base import ENCODINGS, Kind, PEDims, PositionalEncoding


@ENCODINGS.register("cpe")
class ConditionalPE(PositionalEncoding):
    """Chu et al. 2023's PEG in 1-D: x + DWConv_k(x) after block `after_block` (causal in decoders)."""

    class Params(Config):
        kernel: int = Field(3, ge=1, description="convolution width k (Chu et al.: 3)")
        after_block: int = Field(1, ge=0, description="added to the output of this many blocks (Chu et al.: after "
                                 "the first, 1; 0: to the token embeddings)")

    kind: ClassVar[Kind] = "conditional"

    def __init__(self, params: Params, dims: PEDims) -> None:
        super().__init__(params, dims)
        self.conv = nn.Conv1d(dims.d_model, dims.d_model, params.kernel, groups=dims.d_model)  # depthwise

    def generate(self, x: Tensor) -> Tensor:
        """DWConv(x) (B, T, d) for token features x (B, T, d), zero-padded (left only when causal)."""
        k = self.params.kernel
        pad = (k - 1, 0) if self.dims.causal else ((k - 1) // 2, k // 2)
        return self.conv(F.pad(x.transpose(1, 2), pad)).transpose(1, 2)  # (B, d, T + k - 1) -> (B, T, d)
