"""FNet (Lee-Thorp et al. 2022): the attention sublayer replaced by a Fourier transform."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..base import ATTENTION, Attention


@ATTENTION.register("fnet")
class FNetMixing(Attention):
    """FNet (Lee-Thorp et al. 2022): Re(FFT over hidden and sequence) instead of attention."""

    supports_causal: ClassVar[bool] = False
    mixes_input: ClassVar[bool] = True
    accepts = ("none", "additive")

    def why_not_causal(self) -> str:
        return "the Fourier transform over the sequence mixes every position into every output"

    def mix(self, x: Tensor) -> Tensor:
        return torch.fft.fft2(x.float(), dim=(-2, -1)).real.to(x.dtype)  # (B, T, d)
