"""The positional-encoding zoo (DESIGN section 5): one registry, three interfaces.

Interfaces (the model dispatches on ``kind``, never on class names):

* ``additive`` -- ``embed(positions) -> (T, d_model)`` added to token embeddings;
* ``bias``     -- ``bias(q_pos, k_pos) -> (H, Tq, Tk)`` added to attention logits (after the
  1/sqrt(d) scaling); query-dependent biases (Shaw) set ``query_dependent`` and return
  ``(Tq, Tk, D)`` relative key vectors that the attention contracts with q;
* ``rotary``   -- ``rotation(positions) -> Rotation`` that rotates (and scales) q and k.

Positions are explicit ``(T,)`` tensors shared across the batch. Tables are computed once per
forward pass by the model and shared by all layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .config import PEConfig
from .errors import ConfigError
from .registry import Registry

Kind = Literal["none", "additive", "bias", "rotary"]
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
    """What rotates q and k: split-half cos/sin tables (T, D) and optional XPos scales (T, D); each
    frequency fills position i and i + D/2 (the model rotates pairs, `pair_table`, from the first half)."""

    cos: Tensor
    sin: Tensor
    q_scale: Tensor | None = None
    k_scale: Tensor | None = None


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
    """Base class: holds the config and dims; default positions are 0..T-1."""

    kind: ClassVar[Kind] = "none"
    query_dependent: ClassVar[bool] = False
    max_positions: int | None = None  # largest position + 1 the encoding can represent

    def __init__(self, cfg: PEConfig, dims: PEDims) -> None:
        super().__init__()
        self.cfg = cfg
        self.dims = dims

    def default_positions(self, length: int, device: torch.device | str = "cpu") -> Tensor:
        """Positions used when the caller passes none: 0..T-1."""
        return torch.arange(length, device=device)

    def check_positions(self, positions: Tensor) -> None:
        if self.max_positions is not None and positions.numel() and int(positions.max()) >= self.max_positions:
            raise ValueError(
                f"{self.cfg.name}: position {int(positions.max())} is beyond this encoding's "
                f"table (max_len = {self.max_positions})")


ENCODINGS: Registry[type[PositionalEncoding]] = Registry("positional encoding")


def build_encoding(cfg: PEConfig, dims: PEDims) -> PositionalEncoding:
    """Instantiate the encoding named by `cfg.name`."""
    return ENCODINGS.get(cfg.name, "pe.name")(cfg, dims)


# ----------------------------------------------------------------------------- helpers


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


def t5_relative_bucket(relative_position: Tensor, bidirectional: bool = True, num_buckets: int = 32,
                       max_distance: int = 128) -> Tensor:
    """T5 relative-position bucket (Raffel et al. 2020); relative_position = key - query."""
    rel = relative_position.long()
    buckets = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rel > 0).long() * num_buckets
        n = rel.abs()
    else:
        n = (-rel).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (
        torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, n, large)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension (split-half RoPE layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotation(x: Tensor, rot: Rotation, which: Literal["q", "k"]) -> Tensor:
    """Rotate x (B, H, T, D) by position (RoFormer eq. 34, split-half layout); XPos scales q/k."""
    out = x * rot.cos.to(x.dtype) + rotate_half(x) * rot.sin.to(x.dtype)
    scale = rot.q_scale if which == "q" else rot.k_scale
    return out if scale is None else out * scale.to(x.dtype)


def pair_table(rot: Rotation) -> Tensor:
    """The turns of q and k per (position, frequency) as (cos, sin) pairs, scales included: (T, 2, 1, D/2, 2),
    q then k; split-half tables repeat each frequency in both halves, so the first half names it."""
    h = rot.cos.shape[-1] // 2
    turn = torch.stack((rot.cos[:, :h].float(), rot.sin[:, :h].float()), dim=-1)  # (T, D/2, 2)
    turns = [turn if s is None else turn * s[:, :h, None].float() for s in (rot.q_scale, rot.k_scale)]
    return torch.stack(turns, dim=1)[:, :, None]  # (T, 2, 1, D/2, 2)


def check_pairs(rot: Rotation, name: str) -> None:
    """ConfigError unless every table of `rot` repeats each frequency in both halves (what the model's
    paired rotation reads); checked once when a model is built."""
    h = rot.cos.shape[-1] // 2
    for field, t in (("cos", rot.cos), ("sin", rot.sin), ("q_scale", rot.q_scale), ("k_scale", rot.k_scale)):
        if t is not None and not torch.equal(t[..., :h], t[..., h:]):
            raise ConfigError(f"pe.name = {name!r}: its rotation's {field} table differs between the two halves "
                              f"of the head dimension; rotary tables hold each frequency at i and i + D/2")


def rotate_qk(qk: Tensor, table: Tensor) -> Tensor:
    """Rotate q and k together, qk (B, T, 2, H, D), by `pair_table` in the interleaved layout of RoFormer
    eq. 34: pairs (x_2i, x_2i+1) as complex numbers (as Meta's LLaMA code does), one complex product each.
    The same map as `apply_rotation` after a fixed permutation of the D dimensions (split-half <->
    interleaved); computed in at least float32, returned in qk's dtype."""
    x = qk.to(torch.promote_types(qk.dtype, torch.float32))
    table = table.to(x.dtype)
    if torch.compiler.is_compiling():  # inductor generates no code for complex products: the same in reals
        re, im = x.unflatten(-1, (-1, 2)).unbind(-1)  # 2 x (B, T, 2, H, D/2)
        c, s = table.unbind(-1)
        return torch.stack((re * c - im * s, re * s + im * c), dim=-1).flatten(-2).to(qk.dtype)
    out = _complex_pairs(x) * torch.view_as_complex(table.contiguous())  # (B, T, 2, H, D/2) complex
    return torch.view_as_real(out).flatten(-2).to(qk.dtype)  # (B, T, 2, H, D)


def _complex_pairs(x: Tensor) -> Tensor:
    """x (..., D) as D/2 complex numbers (x_2i + i x_2i+1): a view where the strides allow, else a copy."""
    pairs = x.unflatten(-1, (-1, 2))
    if pairs.stride(-1) != 1 or any(s % 2 for s in pairs.stride()[:-1]) or pairs.storage_offset() % 2:
        pairs = pairs.contiguous()
    return torch.view_as_complex(pairs)


def _turn_qk(qkv: Tensor, turns: Tensor) -> Tensor:
    """A new (B, T, 3, H, D) buffer: q and k of `qkv` times the complex `turns`, v copied."""
    out = torch.empty(qkv.shape, dtype=qkv.dtype, device=qkv.device)
    torch.mul(_complex_pairs(qkv[:, :, :2]), turns, out=torch.view_as_complex(out[:, :, :2].unflatten(-1, (-1, 2))))
    out[:, :, 2] = qkv[:, :, 2]
    return out


class _RotateQKV(torch.autograd.Function):
    """rotate_qk on the q and k of a fused projection with v passed through, in one buffer; the backward
    writes one gradient buffer (autograd's slices of qkv would zero-fill two and sum them)."""

    @staticmethod
    def forward(ctx, qkv: Tensor, table: Tensor) -> Tensor:  # noqa: ANN001
        turns = torch.view_as_complex(table.contiguous())  # (T, 2, 1, D/2)
        ctx.save_for_backward(turns)
        return _turn_qk(qkv, turns)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (turns,) = ctx.saved_tensors
        return _turn_qk(g, turns.conj()), None  # the adjoint of a product by z is a product by conj(z)


def rotate_qkv(qkv: Tensor, table: Tensor) -> Tensor:
    """q and k of a fused projection qkv (B, T, 3, H, D) rotated by `pair_table` (RoFormer eq. 34, pairs as
    `rotate_qk`), v unchanged: (B, T, 3, H, D). Float32 eager training takes one buffer each way;
    other dtypes, learned tables and torch.compile compose `rotate_qk` (the same values)."""
    if (qkv.dtype == table.dtype == torch.float32 and not table.requires_grad
            and not torch.compiler.is_compiling()):
        return _RotateQKV.apply(qkv, table)
    return torch.cat([rotate_qk(qkv[:, :, :2], table), qkv[:, :, 2:]], dim=2)


def rope_inv_freq(head_dim: int, theta: float = 10000.0) -> Tensor:
    """RoFormer frequencies theta_i = base^(-2(i-1)/d), i = 1..d/2."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def _cos_sin(positions: Tensor, inv_freq: Tensor, attention_factor: float = 1.0) -> tuple[Tensor, Tensor]:
    angles = positions.float()[:, None] * inv_freq[None, :].to(positions.device)  # (T, D/2)
    emb = torch.cat((angles, angles), dim=-1)  # (T, D) split-half layout
    return emb.cos() * attention_factor, emb.sin() * attention_factor


# ----------------------------------------------------------------------------- encodings


@ENCODINGS.register("none")
class NoPE(PositionalEncoding):
    """No positional encoding (NoPE; Kazemnejad et al. 2023)."""

    kind: ClassVar[Kind] = "none"


@ENCODINGS.register("sinusoidal")
class Sinusoidal(PositionalEncoding):
    """Fixed sinusoids (Vaswani et al. 2017, section 3.5): w_i = 10000^(-2i/d)."""

    kind: ClassVar[Kind] = "additive"

    def embed(self, positions: Tensor) -> Tensor:
        d = self.dims.d_model
        inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float32, device=positions.device) / d))
        ang = positions.float()[:, None] * inv[None, :]  # (T, d/2)
        out = torch.stack((ang.sin(), ang.cos()), dim=-1)  # (T, d/2, 2): sin at 2i, cos at 2i+1
        return out.flatten(1)  # (T, d)


@ENCODINGS.register("learned")
class Learned(PositionalEncoding):
    """Learned absolute positions (GPT/BERT style): the only encoding with a maximum length."""

    kind: ClassVar[Kind] = "additive"

    def __init__(self, cfg: PEConfig, dims: PEDims) -> None:
        super().__init__(cfg, dims)
        self.max_positions = cfg.max_len
        self.table = nn.Embedding(cfg.max_len, dims.d_model)
        nn.init.normal_(self.table.weight, std=dims.d_model ** -0.5)  # the scale of sqrt(d)-scaled tokens

    def embed(self, positions: Tensor) -> Tensor:
        self.check_positions(positions)
        return self.table(positions.long())  # (T, d)


@ENCODINGS.register("alibi")
class ALiBi(PositionalEncoding):
    """ALiBi (Press et al. 2022): bias -m_h * |i - j|, not scaled by 1/sqrt(d)."""

    kind: ClassVar[Kind] = "bias"

    def __init__(self, cfg: PEConfig, dims: PEDims) -> None:
        super().__init__(cfg, dims)
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


@ENCODINGS.register("t5")
class T5Bias(PositionalEncoding):
    """T5 relative bias (Raffel et al. 2020): one learned scalar per (bucket, head)."""

    kind: ClassVar[Kind] = "bias"

    def __init__(self, cfg: PEConfig, dims: PEDims) -> None:
        super().__init__(cfg, dims)
        self.table = nn.Embedding(cfg.t5_num_buckets, dims.n_heads)
        nn.init.normal_(self.table.weight, std=0.02)

    def buckets(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        rel = k_pos[None, :].long() - q_pos[:, None].long()  # (Tq, Tk), key - query
        return t5_relative_bucket(rel, not self.dims.causal, self.cfg.t5_num_buckets, self.cfg.t5_max_distance)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        return self.table(self.buckets(q_pos, k_pos)).permute(2, 0, 1)  # (H, Tq, Tk)

    def score_mod(self, q_pos: Tensor, k_pos: Tensor) -> ScoreMod:
        """Buckets computed inside the FlexAttention score_mod (never materialized)."""
        table, rel = self.table.weight, relative_fn(q_pos, k_pos)
        bidirectional, nb, md = not self.dims.causal, self.cfg.t5_num_buckets, self.cfg.t5_max_distance

        def mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            return score + table[t5_relative_bucket(-rel(qi, ki), bidirectional, nb, md), h]

        return mod


@ENCODINGS.register("kerple")
class Kerple(PositionalEncoding):
    """KERPLE (Chi et al. 2022): log -p*log(1+a|i-j|) or power -p*|i-j|^a, p, a > 0 per head."""

    kind: ClassVar[Kind] = "bias"
    eps: ClassVar[float] = 1e-2

    def __init__(self, cfg: PEConfig, dims: PEDims) -> None:
        super().__init__(cfg, dims)
        self.p = nn.Parameter(torch.rand(dims.n_heads) * 2 + self.eps)
        a0 = torch.rand(dims.n_heads) * (1.0 if cfg.kerple_variant == "log" else 2.0)
        self.a = nn.Parameter(a0.clamp(min=self.eps, max=2.0 - self.eps))

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        dist = (q_pos[:, None] - k_pos[None, :]).abs().float()[None]  # (1, Tq, Tk)
        p = self.p.clamp(min=self.eps)[:, None, None]
        if self.cfg.kerple_variant == "log":
            a = self.a.clamp(min=self.eps)[:, None, None]
            return -p * torch.log1p(a * dist)  # (H, Tq, Tk)
        a = self.a.clamp(min=self.eps, max=2.0)[:, None, None]
        return -p * dist.clamp(min=1e-6).pow(a) * (dist > 0)  # (H, Tq, Tk)

    def score_mod(self, q_pos: Tensor, k_pos: Tensor) -> ScoreMod:
        """The same bias (log or power variant) as a FlexAttention score_mod (never materialized)."""
        p, rel = self.p.clamp(min=self.eps), relative_fn(q_pos, k_pos)
        if self.cfg.kerple_variant == "log":
            a = self.a.clamp(min=self.eps)

            def mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
                return score - p[h] * torch.log1p(a[h] * rel(qi, ki).abs())

            return mod
        a = self.a.clamp(min=self.eps, max=2.0)

        def power_mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            dist = rel(qi, ki).abs().float()
            return score - p[h] * dist.clamp(min=1e-6).pow(a[h]) * (dist > 0)

        return power_mod


@ENCODINGS.register("fire")
class FIRE(PositionalEncoding):
    """FIRE (Li et al. 2024): f(psi(i-j) / psi(max(L, i))), psi(x) = log(c|x| + 1), f an MLP."""

    kind: ClassVar[Kind] = "bias"

    def __init__(self, cfg: PEConfig, dims: PEDims) -> None:
        super().__init__(cfg, dims)
        self.mlp = nn.Sequential(nn.Linear(1, cfg.fire_hidden), nn.ReLU(), nn.Linear(cfg.fire_hidden, dims.n_heads))
        self.c = nn.Parameter(torch.tensor(1.0))
        self.threshold = nn.Parameter(torch.tensor(float(cfg.fire_threshold)))

    def psi(self, x: Tensor) -> Tensor:
        return torch.log(self.c.abs() * x.abs() + 1.0)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        rel = (q_pos[:, None] - k_pos[None, :]).abs().float()  # (Tq, Tk)
        norm = self.psi(torch.maximum(self.threshold.abs(), q_pos.float()))[:, None]  # (Tq, 1)
        x = self.psi(rel) / norm.clamp(min=1e-6)  # (Tq, Tk), in [0, 1] for causal pairs
        return self.mlp(x[..., None]).permute(2, 0, 1)  # (H, Tq, Tk)

    def score_mod(self, q_pos: Tensor, k_pos: Tensor) -> ScoreMod:
        """The same bias as a FlexAttention score_mod: the MLP (1 -> hidden -> H) unrolled per score."""
        rel, qpos = relative_fn(q_pos, k_pos), position_fn(q_pos)
        w1, b1 = self.mlp[0].weight[:, 0], self.mlp[0].bias  # (hidden,)
        w2, b2 = self.mlp[2].weight, self.mlp[2].bias  # (H, hidden), (H,)
        c, thr, hidden = self.c.abs(), self.threshold.abs(), w1.numel()

        def mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            norm = torch.log(c * torch.maximum(thr, qpos(qi).float()) + 1.0).clamp(min=1e-6)
            x = torch.log(c * rel(qi, ki).abs().float() + 1.0) / norm
            out = b2[h]
            for u in range(hidden):
                out = out + w2[h, u] * torch.relu(w1[u] * x + b1[u])
            return score + out

        return mod


@ENCODINGS.register("shaw")
class Shaw(PositionalEncoding):
    """Shaw et al. 2018 relative keys: q_i . a_(clip(j-i, k)) / sqrt(d), 2k+1 learned vectors."""

    kind: ClassVar[Kind] = "bias"
    query_dependent: ClassVar[bool] = True

    def __init__(self, cfg: PEConfig, dims: PEDims) -> None:
        super().__init__(cfg, dims)
        self.table = nn.Embedding(2 * cfg.shaw_clip + 1, dims.head_dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        k = self.cfg.shaw_clip
        rel = (k_pos[None, :] - q_pos[:, None]).long().clamp(-k, k) + k  # (Tq, Tk)
        return self.table(rel) / math.sqrt(self.dims.head_dim)  # (Tq, Tk, D): contracted with q

    def query_score_mod(self, q: Tensor, q_pos: Tensor, k_pos: Tensor) -> ScoreMod:
        """The key term as a FlexAttention score_mod: q . a_r for the 2k+1 distances r, looked up per score
        (a (B, H, Tq, 2k+1) table instead of the (B, H, Tq, Tk) bias)."""
        k = self.cfg.shaw_clip
        qa = torch.einsum("bhqd,rd->bhqr", q, self.table.weight.to(q.dtype)) / math.sqrt(self.dims.head_dim)
        rel = relative_fn(k_pos, q_pos)  # (k_idx, q_idx) -> k_pos - q_pos

        def mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            return score + qa[b, h, qi, rel(ki, qi).clamp(-k, k) + k]

        return mod


@ENCODINGS.register("rope")
class RoPE(PositionalEncoding):
    """Rotary position embedding (Su et al., RoFormer, eq. 34), split-half layout."""

    kind: ClassVar[Kind] = "rotary"

    def __init__(self, cfg: PEConfig, dims: PEDims) -> None:
        super().__init__(cfg, dims)
        inv, self.attention_factor = self.init_inv_freq()
        self.register_buffer("inv_freq", inv, persistent=False)

    def init_inv_freq(self) -> tuple[Tensor, float]:
        return rope_inv_freq(self.dims.head_dim, self.cfg.rope_theta), 1.0

    def rotation(self, positions: Tensor) -> Rotation:
        cos, sin = _cos_sin(positions, self.inv_freq, self.attention_factor)
        return Rotation(cos, sin)


@ENCODINGS.register("xpos")
class XPos(RoPE):
    """XPos (Sun et al. 2023): RoPE with q * zeta^(n/gamma), k * zeta^(-m/gamma), centred positions."""

    def __init__(self, cfg: PEConfig, dims: PEDims) -> None:
        super().__init__(cfg, dims)
        d = dims.head_dim
        zeta = (torch.arange(0, d, 2, dtype=torch.float32) + 0.4 * d) / (1.4 * d)  # (D/2,)
        self.register_buffer("zeta", zeta, persistent=False)

    def rotation(self, positions: Tensor) -> Rotation:
        rot = super().rotation(positions)
        p = positions.float()
        centred = p - torch.floor((p.max() + p.min()) / 2) if p.numel() else p
        s = self.zeta.to(p.device)[None, :] ** (centred[:, None] / self.cfg.xpos_gamma)  # (T, D/2)
        s = torch.cat((s, s), dim=-1)  # (T, D)
        return Rotation(rot.cos, rot.sin, q_scale=s, k_scale=1.0 / s)


class _HFScaledRoPE(RoPE):
    """RoPE whose inverse frequencies come from transformers' ROPE_INIT_FUNCTIONS."""

    rope_type: ClassVar[str] = ""

    def hf_config(self):  # noqa: ANN201 -- a transformers config
        from transformers import LlamaConfig

        c = self.cfg
        params = {"rope_type": self.rope_type, "rope_theta": c.rope_theta, "factor": c.factor}
        max_pos = c.original_max_len
        if self.rope_type in ("yarn", "llama3"):  # these read the training length and the target length
            params["original_max_position_embeddings"] = c.original_max_len
            max_pos = int(c.original_max_len * c.factor)
        if self.rope_type == "llama3":
            params.update(low_freq_factor=1.0, high_freq_factor=4.0)
        d = self.dims
        return LlamaConfig(hidden_size=d.n_heads * d.head_dim, num_attention_heads=d.n_heads, head_dim=d.head_dim,
                           max_position_embeddings=max_pos, rope_parameters=params)

    def init_inv_freq(self, seq_len: int | None = None) -> tuple[Tensor, float]:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        inv, factor = ROPE_INIT_FUNCTIONS[self.rope_type](self.hf_config(), None, seq_len)
        return inv.float(), float(factor)


def _register_scaled(name: str, doc: str) -> None:
    cls = type(f"RoPE_{name}", (_HFScaledRoPE,), {"rope_type": name, "__doc__": doc})
    ENCODINGS.register(name)(cls)


_register_scaled("linear", "RoPE with position interpolation (Chen et al. 2023): positions / factor.")
_register_scaled("yarn", "RoPE with YaRN frequency interpolation and attention factor (Peng et al. 2023).")
_register_scaled("llama3", "RoPE with Llama 3 frequency-dependent scaling (Meta 2024).")


@ENCODINGS.register("dynamic")
class DynamicNTKRoPE(_HFScaledRoPE):
    """RoPE with dynamic NTK scaling (bloc97 / emozilla 2023): base grows with the sequence length."""

    rope_type: ClassVar[str] = "dynamic"

    def rotation(self, positions: Tensor) -> Rotation:
        seq_len = int(positions.max()) + 1 if positions.numel() else 1
        inv, factor = self.init_inv_freq(seq_len) if seq_len > self.cfg.original_max_len else (self.inv_freq, 1.0)
        cos, sin = _cos_sin(positions, inv.to(positions.device), factor)
        return Rotation(cos, sin)


@ENCODINGS.register("randomized")
class Randomized(PositionalEncoding):
    """Randomized positions (Ruoss et al. 2023): n sorted distinct positions from [0, L_max) per pass."""

    def __init__(self, cfg: PEConfig, dims: PEDims) -> None:
        super().__init__(cfg, dims)
        if cfg.base == "randomized":
            raise ConfigError("pe.base = 'randomized': the randomized wrapper needs another encoding to wrap")
        self.base = build_encoding(replace(cfg, name=cfg.base), dims)
        self.kind = self.base.kind  # type: ignore[misc]  # same interface as the wrapped encoding
        self.query_dependent = self.base.query_dependent  # type: ignore[misc]
        self.max_positions = cfg.max_len

    def default_positions(self, length: int, device: torch.device | str = "cpu",
                          generator: torch.Generator | None = None) -> Tensor:
        """Sorted distinct positions drawn uniformly from [0, max_len), at training and test time."""
        if length > self.cfg.max_len:
            raise ValueError(f"randomized: sequence length {length} exceeds pe.max_len = {self.cfg.max_len}")
        return torch.randperm(self.cfg.max_len, generator=generator)[:length].sort().values.to(device)

    def embed(self, positions: Tensor) -> Tensor:
        return self.base.embed(positions)  # type: ignore[attr-defined]

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        return self.base.bias(q_pos, k_pos)  # type: ignore[attr-defined]

    def rotation(self, positions: Tensor) -> Rotation:
        return self.base.rotation(positions)  # type: ignore[attr-defined]

    def score_mod(self, q_pos: Tensor, k_pos: Tensor) -> ScoreMod | None:
        return score_mod_of(self.base, q_pos, k_pos)


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


def sinusoidal_table(positions: Tensor, d_model: int) -> Tensor:
    """The sinusoidal embedding table (T, d) for `positions` (Vaswani et al. 2017)."""
    return Sinusoidal(PEConfig(name="sinusoidal"), PEDims(d_model, 1, d_model)).embed(positions)


__all__ = [
    "ENCODINGS", "PEDims", "Rotation", "PositionalEncoding", "AdditivePE", "BiasPE", "RotaryPE",
    "build_encoding", "alibi_slopes", "t5_relative_bucket", "rotate_half", "apply_rotation", "pair_table",
    "check_pairs", "rotate_qk", "rotate_qkv", "rope_inv_freq",
    "log_length_scale", "sinusoidal_table", "score_mod_of", "relative_fn", "position_fn", "ScoreMod",
]
