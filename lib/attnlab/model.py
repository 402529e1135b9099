"""One Transformer (decoder = causal LM, encoder = bidirectional), built from names.

Read top to bottom: ``ModelConfig``, ``PositionContext`` (tables computed once per forward pass
and shared by all layers), ``SelfAttention``, ``Block``, ``Transformer``. Positions are an
explicit argument: ``model(tokens, positions=None)``; ``None`` means the encoding's default
(0..T-1, or sorted random positions for the randomized wrapper).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from .attention import (
    AttentionSpec,
    AttnDims,
    attention_weights,
    build_attention,
    causal_mask,
    materialize_score_mod,
)
from .config import Config, choice
from .errors import ConfigError
from .positional import (
    PEDims,
    PESpec,
    PositionalEncoding,
    Rotation,
    apply_rotation,
    build_encoding,
    log_length_scale,
    score_mod_of,
)
from .registry import Registry

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
# ReLU: the feed-forward of Vaswani et al. (2017) and of the ALiBi code base (fairseq transformer_lm);
# GELU (Hendrycks & Gimpel 2016): BERT and GPT-2
ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("gelu")(nn.GELU)


class ModelConfig(Config):
    """A small pre-LN Transformer; `attention` is a name (or name + parameters) from attention.ATTENTION."""

    mode: Literal["decoder", "encoder"] = "decoder"
    vocab_size: int = Field(256, ge=2)
    d_model: int = Field(128, ge=8)
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    d_ff: int = Field(512, ge=1)
    activation: str = Field("gelu", description="feed-forward activation (relu: Vaswani et al., the ALiBi code)")
    dropout: float = Field(0.0, ge=0.0, le=0.9)
    attention: AttentionSpec = Field("sdpa", description="exact backend or efficient variant, with its parameters")
    tie_embeddings: bool = True
    max_len: int = Field(4096, ge=1, description="longest input (Linformer's projection length)")
    pad_id: int = Field(-1, ge=-1, description="padding token: keys holding it are masked in attention (-1: none)")
    log_length_scaling: bool = Field(False, description="multiply attention logits by log n (Chiang & Cholak)")

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        return choice(v, ACTIVATIONS.names())

    @model_validator(mode="after")
    def _sizes(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model = {self.d_model}: must be divisible by n_heads = {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model / n_heads = {self.d_model // self.n_heads}: head size must be even")
        if self.pad_id >= self.vocab_size:
            raise ValueError(f"pad_id = {self.pad_id}: must be a token id below vocab_size = {self.vocab_size}, "
                             f"or -1 (no padding mask)")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class PositionContext:
    """Per-forward position state shared by every layer."""

    positions: Tensor  # (T,)
    bias: Tensor | None = None  # (H, T, T), or (T, T, D) relative keys when query_dependent
    query_dependent: bool = False
    key_dependent: bool = False  # the relative vectors are also contracted with k (Huang et al. 2020)
    rotation: Rotation | None = None  # split-half cos/sin (T, D) and XPos scales
    score_mod: Callable | None = None  # the bias as a FlexAttention score_mod (instead of `bias`)
    query_mod: Callable[[Tensor, Tensor], Callable] | None = None  # (q, k) -> score_mod: query-dependent biases
    logit_scale: float = 1.0  # multiplies the whole logit q.k / sqrt(d) + bias (log-length scaling, temperature)
    key_padding: Tensor | None = None  # (B, T) True at padding tokens (model.pad_id): masked as keys
    values: Tensor | None = None  # (T, T, D) relative value vectors weighted by the attention (Shaw et al. eq. 3)

    def bias_for(self, q: Tensor, k: Tensor) -> Tensor | None:
        """The additive logit bias for queries q and keys k (B, H, T, D), logit scale included."""
        if self.bias is None:
            return None
        if self.query_dependent:  # Shaw: q_i . a_ij; Huang et al.: + k_j . a_ij
            rel = self.bias.to(q.dtype)  # (Tq, Tk, D)
            bias = torch.einsum("bhqd,qkd->bhqk", q, rel)
            if self.key_dependent:
                bias = bias + torch.einsum("bhkd,qkd->bhqk", k, rel)
        else:
            bias = self.bias.to(q.dtype)
        return bias * self.logit_scale if self.logit_scale != 1.0 else bias

    def score_mod_for(self, q: Tensor, k: Tensor) -> Callable | None:
        return self.query_mod(q, k) if self.query_mod is not None else self.score_mod


class SelfAttention(nn.Module):
    """Multi-head self-attention: project -> rotate -> one call into the attention path -> output projection."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.causal = cfg.mode == "decoder"
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.attn = build_attention(cfg.attention, AttnDims(cfg.n_heads, self.head_dim, cfg.max_len, self.causal))

    def project(self, x: Tensor, ctx: PositionContext) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v (B, H, T, D) of x (B, T, d), q and k rotated by position."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        if ctx.rotation is not None:
            q, k = apply_rotation(q, ctx.rotation, "q"), apply_rotation(k, ctx.rotation, "k")
        return q, k, v

    def forward(self, x: Tensor, ctx: PositionContext) -> Tensor:
        b, t, d = x.shape
        if self.attn.mixes_input:  # FNet: no q, k, v
            return self.attn.mix(x)
        q, k, v = self.project(x, ctx)
        scale = ctx.logit_scale / math.sqrt(self.head_dim)
        if ctx.values is not None:  # Shaw et al.'s value term needs the attention weights themselves
            p = attention_weights(q, k, bias=ctx.bias_for(q, k), causal=self.causal, scale=scale,
                                  key_padding=ctx.key_padding)  # (B, H, T, T)
            y = torch.matmul(p, v) + torch.einsum("bhqk,qkd->bhqd", p, ctx.values.to(p.dtype))
        else:
            y = self.attn(q, k, v, bias=ctx.bias_for(q, k), score_mod=ctx.score_mod_for(q, k), causal=self.causal,
                          scale=scale, key_padding=ctx.key_padding)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).reshape(b, t, d))

    @torch.no_grad()
    def entropy(self, x: Tensor, ctx: PositionContext) -> Tensor:
        """Attention entropy (nats) per query position, averaged over batch and heads, materialized: (T,)."""
        q, k, _ = self.project(x, ctx)
        scores = torch.matmul(q, k.transpose(-2, -1)) * ctx.logit_scale / math.sqrt(self.head_dim)  # (B, H, T, T)
        bias, mod = ctx.bias_for(q, k), ctx.score_mod_for(q, k)
        if bias is not None:
            scores = scores + bias
        if mod is not None:
            scores = materialize_score_mod(scores, mod)
        if self.causal:
            scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
        p = scores.float().softmax(-1)
        return -(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean(dim=(0, 1))


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(ln(x)); x + mlp(ln(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        act = ACTIVATIONS.get(cfg.activation, "model.activation")
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), act(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, ctx: PositionContext) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x), ctx))
        return x + self.drop(self.mlp(self.ln2(x)))


class Transformer(nn.Module):
    """Token embedding + positional encoding + blocks + LM head (Vaswani et al. 2017, pre-LN)."""

    def __init__(self, cfg: ModelConfig, pe: PESpec | str) -> None:
        super().__init__()
        pe = PESpec.model_validate(pe)
        self.cfg, self.pe_spec = cfg, pe
        self.pe: PositionalEncoding = build_encoding(
            pe, PEDims(cfg.d_model, cfg.n_heads, cfg.head_dim, causal=cfg.mode == "decoder"))
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        attn = self.blocks[0].attn.attn
        if getattr(getattr(self.pe, "params", None), "values", False) and not attn.exact:
            raise ConfigError(f"model.attention = {cfg.attention.name!r}: pe = {pe.name!r} with values needs the "
                              f"attention weights of an exact path; valid choices: eager, sdpa, flex")
        if self.pe.kind == "conditional" and self.pe.params.after_block > cfg.n_layers:
            raise ConfigError(f"pe.after_block = {self.pe.params.after_block}: must be <= model.n_layers = "
                              f"{cfg.n_layers}")
        if self.pe.kind not in attn.accepts:
            raise ConfigError(f"model.attention = {cfg.attention.name!r} cannot carry a {self.pe.kind} encoding "
                              f"(pe = {pe.name!r}); it accepts: {', '.join(attn.accepts)}")
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        for name, m in self.named_modules():  # the encoding initializes its own parameters
            if not (name == "pe" or name.startswith("pe.")):
                self._init(m)
        # Vaswani et al. sec. 3.4 (and fairseq, the ALiBi code base): token embeddings ~ N(0, 1/d) scaled by
        # sqrt(d), so tokens and additive positions (sinusoidal amplitude 1) enter at the same magnitude
        self.embed_scale = math.sqrt(cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.d_model ** -0.5)
        for name, p in self.named_parameters():  # GPT-2: scaled init of residual projections
            if name.endswith("attn.out.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding) and m.weight.shape[1] > 1:
            nn.init.normal_(m.weight, std=0.02)

    def position_context(self, positions: Tensor, length: int, logit_scale: float = 1.0) -> PositionContext:
        """Bias / rotation tables for this forward pass, computed once for all layers."""
        pe = self.pe
        if self.cfg.log_length_scaling:
            logit_scale = logit_scale * log_length_scale(length)
        values = pe.relative_values(positions, positions) if hasattr(pe, "relative_values") else None
        if values is not None:  # the value term needs materialized weights: no score_mod path
            return PositionContext(positions, pe.bias(positions, positions), pe.query_dependent, pe.key_dependent,
                                   logit_scale=logit_scale, values=values)
        if pe.kind == "bias" and self.blocks[0].attn.attn.uses_score_mod and logit_scale == 1.0:
            query_score_mod = getattr(pe, "query_score_mod", None)
            if pe.query_dependent and query_score_mod is not None:
                return PositionContext(positions, query_mod=lambda q, k: query_score_mod(q, k, positions, positions))
            mod = score_mod_of(pe, positions, positions)
            if mod is not None:
                return PositionContext(positions, score_mod=mod)
        if pe.kind == "bias":
            return PositionContext(positions, pe.bias(positions, positions), pe.query_dependent, pe.key_dependent,
                                   logit_scale=logit_scale)
        if pe.kind == "rotary":
            return PositionContext(positions, rotation=pe.rotation(positions), logit_scale=logit_scale)
        return PositionContext(positions, logit_scale=logit_scale)

    def forward(self, tokens: Tensor, positions: Tensor | None = None, *, logit_scale: float = 1.0,
                return_hidden: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits (B, T, V) for tokens (B, T) at positions (T,); optionally every layer's hidden states."""
        b, t = tokens.shape
        if positions is None:
            positions = self.pe.default_positions(t, tokens.device)
        positions = positions.to(tokens.device)
        if positions.shape != (t,):
            raise ValueError(f"positions must have shape ({t},), got {tuple(positions.shape)}")
        self.pe.check_positions(positions)
        x = self.embed(tokens) * self.embed_scale  # (B, T, d)
        if self.pe.kind == "additive":
            x = x + self.pe.embed(positions).to(x.dtype)[None]
        x = self.drop(x)
        ctx = self.position_context(positions, t, logit_scale)
        if self.cfg.pad_id >= 0:
            pad = tokens == self.cfg.pad_id  # (B, T)
            if pad.device.type == "meta" or bool(pad.any()):  # meta (a dry run): take the padded path
                ctx = replace(ctx, key_padding=pad)
        hidden = [x]
        generate_at = self.pe.params.after_block if self.pe.kind == "conditional" else -1
        for i, block in enumerate(self.blocks):
            if i == generate_at:  # Chu et al.'s PEG: positions generated from the features themselves
                x = x + self.pe.generate(x)
            x = block(x, ctx)
            hidden.append(x)
        if generate_at == len(self.blocks):
            x = x + self.pe.generate(x)
        logits = self.head(self.ln_f(x))
        return (logits, hidden) if return_hidden else logits

    def loss(self, tokens: Tensor, targets: Tensor, positions: Tensor | None = None,
             mask: Tensor | None = None) -> Tensor:
        """Mean cross-entropy (nats) of targets (B, T); `mask` (B, T) selects scored tokens."""
        return masked_cross_entropy(self(tokens, positions), targets, mask)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean cross-entropy (nats) of logits (B, T, V) against targets (B, T), over the positions `mask` selects."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    if mask is None:
        return ce.mean()
    m = mask.flatten().float()
    return (ce * m).sum() / m.sum().clamp(min=1)


def build_model(cfg: ModelConfig, pe: PESpec | str) -> Transformer:
    """The Transformer of `cfg` with the positional encoding `pe` (names from the registries)."""
    return Transformer(cfg, pe)


@contextmanager
def record_entropy(model: Transformer) -> Iterator[list[Tensor]]:
    """Within the block, every forward pass appends each layer's attention entropy by position (T,) to the
    yielded list (forward hooks on the attention sublayers; the model itself is not changed)."""
    out: list[Tensor] = []

    def hook(module: SelfAttention, args: tuple[Tensor, PositionContext], _: Tensor) -> None:
        out.append(module.entropy(*args))

    handles = [blk.attn.register_forward_hook(hook) for blk in model.blocks]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()
