"""What every attention path shares: one signature, one registry, parameters beside each class.

Every entry of ``ATTENTION`` -- the exact backends (eager, sdpa, flex) and the efficient
variants -- is a module called as transformers' attention interface is:
``attn(q, k, v, *, bias, score_mod, causal, scale, key_padding) -> (B, H, Tq, D)`` with q
(B, H, Tq, D), k and v (B, H, Tk, D), ``bias`` broadcastable to (B, H, Tq, Tk) and added after
the q.k scaling. FNet replaces the whole sublayer (``mixes_input``: called as ``mix(x)``).
A new variant is one file: a subclass with a nested ``Params`` and one ``@ATTENTION.register``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from ..config import Component, Config, NoParams
from ..errors import ConfigError
from ..registry import Registry

ALL_PE = ("none", "additive", "rotary", "bias", "conditional")
WITHOUT_BIAS = ("none", "additive", "rotary", "conditional")


@dataclass(frozen=True)
class AttnDims:
    """Sizes an attention path needs: heads, head size, the longest input (Linformer), causality."""

    n_heads: int
    head_dim: int
    max_len: int
    causal: bool


class Attention(nn.Module):
    """Base class: validates causality at construction; subclasses implement `forward` (or `mix`)."""

    Params: ClassVar[type[Config]] = NoParams
    exact: ClassVar[bool] = False  # an exact softmax attention (a backend), not an approximation
    supports_causal: ClassVar[bool] = True
    mixes_input: ClassVar[bool] = False  # FNet: no q, k, v; called as mix(x)
    uses_score_mod: ClassVar[bool] = False  # flex: bias encodings arrive as a score_mod, never materialized
    accepts: ClassVar[tuple[str, ...]] = ALL_PE  # PE interfaces it can carry

    def __init__(self, params: Config, dims: AttnDims) -> None:
        super().__init__()
        self.params, self.dims = params, dims
        self.name = ATTENTION.name_of(type(self))
        if dims.causal and not self.supports_causal:
            raise ConfigError(f"model.attention = {self.name!r} is not causal ({self.why_not_causal()}); "
                              f"use it with model.mode = 'encoder'")

    def why_not_causal(self) -> str:
        return "it mixes all positions"

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def mix(self, x: Tensor) -> Tensor:  # pragma: no cover - only input-mixing variants define it
        raise RuntimeError(f"{self.name} attends over q, k, v; call it as attn(q, k, v, ...)")


ATTENTION: Registry[type[Attention]] = Registry("attention")


class AttentionSpec(Component):
    """An attention path: a name from ATTENTION and that class's own parameters."""

    registry = ATTENTION
    default = "sdpa"


def build_attention(spec: AttentionSpec | str, dims: AttnDims) -> Attention:
    """Instantiate the attention of `spec` (an AttentionSpec, or a name with default parameters)."""
    spec = AttentionSpec.model_validate(spec)
    return spec.cls(spec.params, dims)
