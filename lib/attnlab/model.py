"""One Transformer (decoder = causal LM, encoder = bidirectional), built from names.

Read top to bottom: ``PositionContext`` (tables computed once per forward pass and shared by
all layers), ``SelfAttention``, ``Block``, ``Transformer``. Positions are an explicit argument:
``model(tokens, positions=None)``; ``None`` means the encoding's default (0..T-1, or sorted
random positions for the randomized wrapper).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import BACKENDS, attention_backend, mask_padding, materialize_score_mod, padding_bias
from .config import ModelConfig, PEConfig
from .efficient import build_variant
from .errors import ConfigError
from .feedforward import FeedForward
from .fused import fused_qkv_applies, fused_qkv_attention
from .positional import (
    PEDims,
    PositionalEncoding,
    build_encoding,
    check_pairs,
    log_length_scale,
    pair_table,
    rotate_qkv,
    score_mod_of,
)
from .registry import Registry


@dataclass(frozen=True)
class PositionContext:
    """Per-forward position state shared by every layer."""

    positions: Tensor  # (T,)
    bias: Tensor | None = None  # (H, T, T), or (T, T, D) relative keys when query_dependent
    query_dependent: bool = False
    rotation: Tensor | None = None  # (T, 2, 1, D/2, 2) turns of q and k (positional.pair_table)
    score_mod: Callable | None = None  # fused bias for the flex backend (instead of `bias`)
    query_mod: Callable[[Tensor], Callable] | None = None  # q -> score_mod, for query-dependent biases (Shaw)
    logit_scale: float = 1.0  # multiplies the whole logit q.k / sqrt(d) + bias (log-length scaling, temperature)
    key_padding: Tensor | None = None  # (B, T) True at padding tokens (model.pad_id): masked as keys


class SelfAttention(nn.Module):
    """Multi-head self-attention with a pluggable exact backend (eager | sdpa | flex)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.causal = cfg.mode == "decoder"
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.backend_name = cfg.attention
        self.backend = attention_backend(cfg.attention) if cfg.attention in BACKENDS else None
        self.variant = None if self.backend else build_variant(
            cfg.attention, cfg.n_heads, self.head_dim, cfg.max_len, self.causal, window=cfg.window,
            k=cfg.linformer_k, features=cfg.features, factor=cfg.probsparse_factor)

    record: list[Tensor] | None = None  # set to a list to record the mean attention entropy per query
    fused: bool = True  # False: always the composed path (the reference of the fused one)

    def _fused_applies(self, qkv: Tensor, ctx: PositionContext) -> bool:
        """The sdpa backend with nothing but (optional) rotation, a bias (H, T, T), causality and a scale:
        `fused.py`."""
        return (self.fused and self.backend_name == "sdpa" and self.record is None and not ctx.query_dependent
                and ctx.score_mod is None and ctx.query_mod is None and ctx.key_padding is None
                and fused_qkv_applies(qkv, ctx.rotation, ctx.bias, self.causal))

    def _entropy(self, q: Tensor, k: Tensor, bias: Tensor | None, scale: float,
                 score_mod: Callable | None = None) -> Tensor:
        """Attention entropy (nats) per query position, averaged over batch and heads: (T,)."""
        scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, T, T)
        if bias is not None:
            scores = scores + bias
        if score_mod is not None:
            scores = materialize_score_mod(scores, score_mod)
        if self.causal:
            t = q.shape[-2]
            scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool, device=q.device).tril(), float("-inf"))
        p = scores.float().softmax(-1)
        return -(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean(dim=(0, 1)).detach()

    def forward(self, x: Tensor, ctx: PositionContext) -> Tensor:
        b, t, d = x.shape
        if self.variant is not None and self.variant.mixes_input:  # FNet: no q, k, v
            return self.variant.mix(x)
        qkv = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim)  # (B, T, 3, H, D)
        if self._fused_applies(qkv, ctx):  # one CPU kernel on qkv, one gradient buffer back
            bias = ctx.bias if ctx.bias is None or ctx.logit_scale == 1.0 else ctx.bias * ctx.logit_scale
            y = fused_qkv_attention(qkv, ctx.rotation, ctx.logit_scale / math.sqrt(self.head_dim), self.causal, bias)
            return self.out(y.transpose(1, 2).reshape(b, t, d))  # (B, H, T, D) -> (B, T, d)
        if ctx.rotation is not None:  # q and k turned in one pass, v as it is
            qkv = rotate_qkv(qkv, ctx.rotation)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        scale = ctx.logit_scale / math.sqrt(self.head_dim)
        bias = ctx.bias
        if bias is not None and ctx.query_dependent:  # Shaw: q_i . a_ij, (B, H, T, T)
            bias = torch.einsum("bhqd,qkd->bhqk", q, bias.to(q.dtype)) * ctx.logit_scale
        elif bias is not None:
            bias = bias.to(q.dtype) * ctx.logit_scale if ctx.logit_scale != 1.0 else bias.to(q.dtype)
        score_mod = ctx.query_mod(q) if ctx.query_mod is not None else ctx.score_mod
        pad = ctx.key_padding
        if pad is not None and self.variant is None:  # padding keys: -inf in the bias or the score_mod
            if score_mod is not None:
                score_mod = mask_padding(score_mod, pad)
            else:
                bias = padding_bias(pad, q.dtype, bias)
        if self.record is not None:  # analysis: attention entropy and outputs (eager, materialized)
            self.record.append(self._entropy(q, k, bias, scale, score_mod))
        if self.variant is not None:  # efficient variants use the default 1/sqrt(d) scale
            kw = {} if pad is None else {"key_padding": pad}
            y = self.variant(q, k, v, bias, **kw) if bias is not None else self.variant(q, k, v, **kw)
        else:
            extra = {"score_mod": score_mod} if score_mod is not None else {}
            y = self.backend(q, k, v, bias=bias, causal=self.causal, scale=scale, **extra)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
# ReLU: the feed-forward of Vaswani et al. (2017) and of the ALiBi code base (fairseq transformer_lm);
# GELU (Hendrycks & Gimpel 2016): BERT and GPT-2
ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("gelu")(nn.GELU)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(ln(x)); x + mlp(ln(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        act = ACTIVATIONS.get(cfg.activation, "model.activation")
        self.mlp = FeedForward(cfg.d_model, cfg.d_ff, act())
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, ctx: PositionContext) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x), ctx))
        return x + self.drop(self.mlp(self.ln2(x)))


class Transformer(nn.Module):
    """Token embedding + positional encoding + blocks + LM head (Vaswani et al. 2017, pre-LN)."""

    def __init__(self, cfg: ModelConfig, pe: PEConfig) -> None:
        super().__init__()
        self.cfg, self.pe_cfg = cfg, pe
        head_dim = cfg.d_model // cfg.n_heads
        self.pe: PositionalEncoding = build_encoding(
            pe, PEDims(cfg.d_model, cfg.n_heads, head_dim, causal=cfg.mode == "decoder"))
        variant = self.blocks_variant(cfg)
        if variant is not None and self.pe.kind not in variant.accepts:
            raise ConfigError(f"model.attention = {cfg.attention!r} cannot carry a {self.pe.kind} encoding "
                              f"(pe.name = {pe.name!r}); it accepts: {', '.join(variant.accepts)}")
        if self.pe.kind == "rotary":  # the attention rotates pairs: one frequency per pair of dimensions
            with torch.no_grad():
                check_pairs(self.pe.rotation(torch.arange(16)), pe.name)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
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
    def blocks_variant(cfg: ModelConfig) -> type | None:
        """The efficient-variant class named by cfg.attention (None for exact backends)."""
        from .efficient import VARIANTS

        return None if cfg.attention in BACKENDS else VARIANTS.get(cfg.attention, "model.attention")

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
        if self.pe_cfg.log_length_scaling:
            logit_scale = logit_scale * log_length_scale(length)
        if pe.kind == "bias" and self.cfg.attention == "flex" and logit_scale == 1.0:
            query_score_mod = getattr(pe, "query_score_mod", None)
            if pe.query_dependent and query_score_mod is not None:
                return PositionContext(positions, query_mod=partial(query_score_mod, q_pos=positions,
                                                                    k_pos=positions))
            mod = score_mod_of(pe, positions, positions)
            if mod is not None:
                return PositionContext(positions, score_mod=mod)
        if pe.kind == "bias":
            return PositionContext(positions, pe.bias(positions, positions), pe.query_dependent,
                                   logit_scale=logit_scale)
        if pe.kind == "rotary":
            return PositionContext(positions, rotation=pair_table(pe.rotation(positions)), logit_scale=logit_scale)
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
            if bool(pad.any()):
                ctx = replace(ctx, key_padding=pad)
        hidden = [x]
        for block in self.blocks:
            x = block(x, ctx)
            hidden.append(x)
        logits = self.head(self.ln_f(x))
        return (logits, hidden) if return_hidden else logits

    def loss(self, tokens: Tensor, targets: Tensor, positions: Tensor | None = None,
             mask: Tensor | None = None) -> Tensor:
        """Mean cross-entropy (nats) of targets (B, T); `mask` (B, T) selects scored tokens."""
        logits = self(tokens, positions)
        ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        if mask is None:
            return ce.mean()
        m = mask.flatten().float()
        return (ce * m).sum() / m.sum().clamp(min=1)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n


def build_model(cfg: ModelConfig, pe: PEConfig) -> Transformer:
    """The Transformer of `cfg` with the positional encoding of `pe` (names from the registries)."""
    return Transformer(cfg, pe)
