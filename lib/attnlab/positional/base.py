"""The three positional-encoding interfaces, the registry and what every encoding shares.

Interfaces (the model dispatches on ``kind``, never on class names):

* ``additive`` -- ``embed(positions) -> (T, d_model)`` added to token embeddings;
* ``bias``     -- ``bias(q_pos, k_pos) -> (H, Tq, Tk)`` added to attention logits (after the
  1/sqrt(d) scaling), optionally also ``score_mod(q_pos, k_pos)`` for FlexAttention; a
  query-dependent bias (Shaw) sets ``query_dependent`` and returns ``(Tq, Tk, D)`` relative
  key vectors that the attention contracts with q (and also with k where ``key_dependent`` is set:
  Huang et al.'s relative embeddings that interact with query and key);
* ``rotary``   -- ``rotation(positions) -> Rotation``: cos and sin (T, D/2) of each position's angle per
  frequency, which turn the pairs (x_2i, x_2i+1) of q and k (RoFormer eq. 34), and XPos scales;
* ``conditional`` -- ``generate(x) -> (B, T, d_model)`` computed from the token features themselves and
  added to them after block ``params.after_block`` (Chu et al.'s position encoding generator).

Positions are explicit ``(T,)`` tensors shared across the batch. The model computes the tables
once per forward pass and shares them across layers. A new encoding is one file: a subclass of
``PositionalEncoding`` with a nested ``Params`` config and one ``@ENCODINGS.register`` line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..config import Component, Config, NoParams
from ..registry import Registry

Kind = Literal["none", "additive", "bias", "rotary", "conditional"]
ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class PEDims:
    """Model sizes a positional encoding needs."""

    d_model: int
    n_heads: int
    head_dim: int
    causal: bool = True


@dataclass(frozen=True)
class Rotation:
    """What rotates q and k: cos and sin of m * theta_i, (T, D/2), and optional XPos scales of q and k (T, D/2)."""

    cos: Tensor
    sin: Tensor
    q_scale: Tensor | None = None
    k_scale: Tensor | None = None

    def cos_sin(self, which: Literal["q", "k"]) -> tuple[Tensor, Tensor]:
        """cos and sin (T, D/2) that turn q or k, XPos's scale of q or k included."""
        scale = self.q_scale if which == "q" else self.k_scale
        return (self.cos, self.sin) if scale is None else (self.cos * scale, self.sin * scale)


@runtime_checkable
class AdditivePE(Protocol):
    kind: ClassVar[str]

    def embed(self, positions: Tensor) -> Tensor: ...


@runtime_checkable
class BiasPE(Protocol):
    kind: ClassVar[str]
    query_dependent: ClassVar[bool]

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor: ...


@runtime_checkable
class RotaryPE(Protocol):
    kind: ClassVar[str]

    def rotation(self, positions: Tensor) -> Rotation: ...


class PositionalEncoding(nn.Module):
    """Base class: holds its parameters and the model's dims; default positions are 0..T-1."""

    Params: ClassVar[type[Config]] = NoParams
    kind: ClassVar[Kind] = "none"
    query_dependent: ClassVar[bool] = False
    key_dependent: ClassVar[bool] = False  # a query-dependent bias also contracted with the keys
    max_positions: int | None = None  # largest position + 1 the encoding can represent

    def __init__(self, params: Config, dims: PEDims) -> None:
        super().__init__()
        self.params, self.dims = params, dims
        self.name = ENCODINGS.name_of(type(self))

    def default_positions(self, length: int, device: torch.device | str = "cpu") -> Tensor:
        """Positions used when the caller passes none: 0..T-1."""
        return torch.arange(length, device=device)

    def check_positions(self, positions: Tensor) -> None:
        if positions.device.type == "meta":  # shapes only (a dry run): the values are unknown
            return
        if self.max_positions is not None and positions.numel() and int(positions.max()) >= self.max_positions:
            raise ValueError(f"{self.name}: position {int(positions.max())} is beyond this encoding's table "
                             f"(max_len = {self.max_positions})")


ENCODINGS: Registry[type[PositionalEncoding]] = Registry("positional encoding")


class PESpec(Component):
    """A positional encoding: a name from ENCODINGS and that encoding's own parameters."""

    registry = ENCODINGS
    default = "rope"


def build_encoding(spec: PESpec | str, dims: PEDims) -> PositionalEncoding:
    """Instantiate the encoding of `spec` (a PESpec, or a name with default parameters)."""
    spec = PESpec.model_validate(spec)
    return spec.cls(spec.params, dims)


@ENCODINGS.register("none")
class NoPE(PositionalEncoding):
    """No positional encoding (NoPE; Kazemnejad et al. 2023)."""

    kind: ClassVar[Kind] = "none"


# ----------------------------------------------------------------------------- shared helpers


def apply_rotation(x: Tensor, rot: Rotation, which: Literal["q", "k"]) -> Tensor:
    """Rotate x (B, H, T, D) by position: each pair (x_2i, x_2i+1) turned by m * theta_i (RoFormer eq. 34,
    its interleaved layout, as Meta's LLaMA code); XPos scales q or k. transformers' Llama rotates the same
    pairs laid out as (x_i, x_i+D/2): equal after that fixed permutation of D (tests).

    Eager fp32/fp64: one complex product per pair, as LLaMA's code writes it (``rotate_complex``; the real
    form's pair swap is a slow CPU kernel: ``attnlab bench ablate`` put the real form's step 4.6% and 15.4%
    slower in two runs; q and k of one layer, forward and backward, 2.9 against 6.6 ms). Under torch.compile
    and in half precision (no complex bf16): the same rotation in real arithmetic (``rotate_real``), which
    inductor fuses into one pass."""
    c, s = rot.cos_sin(which)  # (T, D/2)
    if x.dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling() and _pairs_viewable(x):
        return rotate_complex(x, c, s)
    return rotate_real(x, c, s)


def _pairs_viewable(x: Tensor) -> bool:
    """x's pairs can be read as complex numbers in place (view_as_complex: adjacent floats, even strides)."""
    return x.stride(-1) == 1 and all(st % 2 == 0 for st in x.stride()[:-1]) and x.storage_offset() % 2 == 0


def rotate_complex(x: Tensor, c: Tensor, s: Tensor) -> Tensor:
    """x (..., T, D) rotated by (c, s) (T, D/2): the pairs as complex numbers times c + i s (LLaMA's code)."""
    z = torch.view_as_complex(x.unflatten(-1, (-1, 2)))  # (..., T, D/2) complex view of the pairs
    return torch.view_as_real(z * torch.complex(c.to(x.dtype), s.to(x.dtype))).flatten(-2)


def rotate_real(x: Tensor, c: Tensor, s: Tensor) -> Tensor:
    """The same rotation in real arithmetic on a (..., D/2, 2) view of the pairs (one fused pass compiled)."""
    c, s = c.to(x.dtype), s.to(x.dtype)
    pairs = x.unflatten(-1, (-1, 2))  # (..., T, D/2, 2): (x_2i, x_2i+1)
    # (x_2i c - x_2i+1 s, x_2i+1 c + x_2i s): the pair times (c, c) plus the swapped pair times (-s, s)
    return (pairs * torch.stack((c, c), -1) + pairs.flip(-1) * torch.stack((-s, s), -1)).flatten(-2)


def position_fn(pos: Tensor) -> Callable[[Tensor], Tensor]:
    """idx -> pos[idx] for a score_mod; pure index arithmetic when `pos` is a contiguous range (the common
    case), so the fused kernel needs no gathers."""
    if pos.numel() < 2 or bool((pos[1:] - pos[:-1] == 1).all()):
        start = int(pos[0]) if pos.numel() else 0
        return lambda i: i + start
    return lambda i: pos[i]


def relative_fn(q_pos: Tensor, k_pos: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """(q_idx, k_idx) -> q_pos[q_idx] - k_pos[k_idx] for a score_mod (see position_fn)."""
    q, k = position_fn(q_pos), position_fn(k_pos)
    return lambda qi, ki: q(qi) - k(ki)


def score_mod_of(pe: PositionalEncoding, q_pos: Tensor, k_pos: Tensor) -> ScoreMod | None:
    """The FlexAttention score_mod of a bias encoding, or None where it has none (then: materialize)."""
    fn = getattr(pe, "score_mod", None)
    return fn(q_pos, k_pos) if fn is not None and pe.kind == "bias" and not pe.query_dependent else None


def log_length_scale(n: int) -> float:
    """Chiang & Cholak (2022): multiply attention logits by log n (n = sequence length)."""
    return math.log(max(n, 2))
