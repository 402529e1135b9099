"""RoPE context extension at inference: inverse frequencies from transformers' ROPE_INIT_FUNCTIONS.

Position interpolation (Chen et al. 2023), dynamic NTK (bloc97 / emozilla 2023), YaRN (Peng et
al. 2023) and Llama 3's frequency-dependent scaling (Meta 2024) are transformers' own code, not
re-implemented here: these classes build the config those functions read.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from torch import Tensor

from .base import ENCODINGS, Rotation
from .rope import RoPE, cos_sin


def rope_parameters(rope_type: str, theta: float, factor: float, original: int) -> tuple[dict[str, Any], int]:
    """transformers' `rope_parameters` for a scaling of a model trained at `original` positions, and the
    `max_position_embeddings` its init function reads (the target length for YaRN and Llama 3)."""
    params: dict[str, Any] = {"rope_type": rope_type, "rope_theta": theta}
    if rope_type == "default":
        return params, original
    params["factor"] = factor
    max_pos = original
    if rope_type in ("yarn", "llama3"):  # these read the training length and the target length
        params["original_max_position_embeddings"] = original
        max_pos = int(original * factor)
    if rope_type == "llama3":
        params.update(low_freq_factor=1.0, high_freq_factor=4.0)
    return params, max_pos


class ScaledRoPE(RoPE):
    """RoPE whose inverse frequencies (and attention factor) come from transformers' ROPE_INIT_FUNCTIONS."""

    class Params(RoPE.Params):
        factor: float = Field(4.0, ge=1.0, description="target length / training length")
        original_max_len: int = Field(512, ge=1, description="the training length")

    rope_type: ClassVar[str] = ""

    def hf_config(self) -> Any:
        """The transformers LlamaConfig whose `rope_parameters` describe this scaling."""
        from transformers import LlamaConfig

        p, d = self.params, self.dims
        params, max_pos = rope_parameters(self.rope_type, p.theta, p.factor, p.original_max_len)
        return LlamaConfig(hidden_size=d.n_heads * d.head_dim, num_attention_heads=d.n_heads, head_dim=d.head_dim,
                           max_position_embeddings=max_pos, rope_parameters=params)

    def init_inv_freq(self, seq_len: int | None = None) -> tuple[Tensor, float]:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        inv, factor = ROPE_INIT_FUNCTIONS[self.rope_type](self.hf_config(), None, seq_len)
        return inv.float(), float(factor)


@ENCODINGS.register("linear")
class LinearRoPE(ScaledRoPE):
    """RoPE with position interpolation (Chen et al. 2023): positions / factor."""

    rope_type: ClassVar[str] = "linear"


@ENCODINGS.register("yarn")
class YaRNRoPE(ScaledRoPE):
    """RoPE with YaRN frequency interpolation and attention factor (Peng et al. 2023)."""

    rope_type: ClassVar[str] = "yarn"


@ENCODINGS.register("llama3")
class Llama3RoPE(ScaledRoPE):
    """RoPE with Llama 3 frequency-dependent scaling (Meta 2024)."""

    rope_type: ClassVar[str] = "llama3"


@ENCODINGS.register("dynamic")
class DynamicNTKRoPE(ScaledRoPE):
    """RoPE with dynamic NTK scaling (bloc97 / emozilla 2023): the base grows with the sequence length."""

    rope_type: ClassVar[str] = "dynamic"

    def rotation(self, positions: Tensor) -> Rotation:
        if positions.device.type == "meta":  # shapes only (a dry run): assume positions 0..T-1
            seq_len = positions.numel()
        else:
            seq_len = int(positions.max()) + 1 if positions.numel() else 1
        long = seq_len > self.params.original_max_len
        inv, factor = self.init_inv_freq(seq_len) if long else (self.inv_freq, 1.0)
        cos, sin = cos_sin(positions, inv.to(positions.device), factor)
        return Rotation(cos, sin)
