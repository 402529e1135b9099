"""Approximate and structured attention variants (DESIGN section 6), one registry.

Each variant is a module built from the model config and a maximum length, called like an
exact backend: ``variant(q, k, v, causal) -> (B, H, T, D)``. FNet replaces the whole
attention sublayer (no q, k, v): it sets ``mixes_input`` and is called as ``variant.mix(x)``.
A variant that cannot be causal refuses ``causal=True`` with a ConfigError at construction.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import flex_attention_backend, padding_bias
from .errors import ConfigError
from .registry import Registry

VARIANTS: Registry[type[nn.Module]] = Registry("efficient attention variant")


class Variant(nn.Module):
    """Base: remembers sizes; non-causal variants refuse causal use before any work."""

    supports_causal: ClassVar[bool] = True
    mixes_input: ClassVar[bool] = False
    name: ClassVar[str] = ""
    accepts: ClassVar[tuple[str, ...]] = ("none", "additive", "rotary")  # PE interfaces it can carry

    def __init__(self, n_heads: int, head_dim: int, max_len: int, causal: bool, **params: float) -> None:
        super().__init__()
        if causal and not self.supports_causal:
            raise ConfigError(f"model.attention = {self.name!r} is not causal ({self.why_not_causal()}); "
                              f"use it with model.mode = 'encoder'")
        self.n_heads, self.head_dim, self.max_len, self.causal = n_heads, head_dim, max_len, causal

    def why_not_causal(self) -> str:
        return "it mixes all positions"


def build_variant(name: str, n_heads: int, head_dim: int, max_len: int, causal: bool, **params: float) -> Variant:
    """Instantiate the efficient variant registered as `name`."""
    cls = VARIANTS.get(name, "model.attention")
    return cls(n_heads, head_dim, max_len, causal, **params)  # type: ignore[call-arg]


@VARIANTS.register("local")
class LocalAttention(Variant):
    """Sliding-window attention (Beltagy et al. 2020, Longformer's local part): |i - j| <= w."""

    name = "local"
    accepts = ("none", "additive", "rotary", "bias")

    def __init__(self, n_heads: int, head_dim: int, max_len: int, causal: bool, window: int = 64, **_: float) -> None:
        super().__init__(n_heads, head_dim, max_len, causal)
        self.window = int(window)

    def mask(self, t: int, device: torch.device) -> Tensor:
        i = torch.arange(t, device=device)
        rel = i[:, None] - i[None, :]  # (T, T) query - key
        ok = rel.abs() <= self.window
        return ok & (rel >= 0) if self.causal else ok

    def forward(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None,
                key_padding: Tensor | None = None) -> Tensor:
        if key_padding is not None:
            bias = padding_bias(key_padding, q.dtype, bias)
        if bias is None and (q.device.type == "cuda" or not torch.is_grad_enabled()):
            # the window as a FlexAttention block mask: blocks outside the band are skipped, O(T w)
            return flex_attention_backend(q, k, v, causal=self.causal, window=self.window)
        m = self.mask(q.shape[-2], q.device)  # (T, T): materialized band
        if bias is not None:
            m = bias.to(q.dtype).masked_fill(~m, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m)


@VARIANTS.register("linformer")
class Linformer(Variant):
    """Linformer (Wang et al. 2020): keys and values projected along length by k x n matrices E, F."""

    supports_causal = False
    name = "linformer"

    def why_not_causal(self) -> str:
        return "projecting keys along the length mixes future positions into every key"

    def __init__(self, n_heads: int, head_dim: int, max_len: int, causal: bool, k: int = 64, **_: float) -> None:
        super().__init__(n_heads, head_dim, max_len, causal)
        self.k = int(k)
        self.E = nn.Parameter(torch.randn(self.k, max_len) / math.sqrt(self.k))  # shared across heads
        self.F = nn.Parameter(torch.randn(self.k, max_len) / math.sqrt(self.k))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_padding: Tensor | None = None) -> Tensor:
        t = k.shape[-2]
        if key_padding is not None:  # padding keys and values contribute nothing to the projections
            k, v = _zero_padding(k, key_padding), _zero_padding(v, key_padding)
        if t > self.max_len:
            raise ValueError(f"linformer: sequence length {t} exceeds its projection length {self.max_len}")
        kp = torch.einsum("kn,bhnd->bhkd", self.E[:, :t], k)  # (B, H, k, D)
        vp = torch.einsum("kn,bhnd->bhkd", self.F[:, :t], v)  # (B, H, k, D)
        return F.scaled_dot_product_attention(q, kp, vp)


def _zero_padding(x: Tensor, key_padding: Tensor | None) -> Tensor:
    """x (B, H, T, ...) with the rows of padding positions (key_padding (B, T) True) set to 0."""
    return x if key_padding is None else x.masked_fill(key_padding[:, None, :, None], 0.0)


def _linear_attention(phi_q: Tensor, phi_k: Tensor, v: Tensor, causal: bool, eps: float = 1e-30) -> Tensor:
    """out_i = phi(q_i) S_i / phi(q_i) z_i with S = sum phi(k_j) v_j^T, z = sum phi(k_j) (prefix sums if causal)."""
    if not causal:
        kv = torch.einsum("bhnm,bhnd->bhmd", phi_k, v)  # (B, H, M, D)
        z = phi_k.sum(dim=-2)  # (B, H, M)
        num = torch.einsum("bhnm,bhmd->bhnd", phi_q, kv)
        den = torch.einsum("bhnm,bhm->bhn", phi_q, z)[..., None]
        return num / den.clamp_min(eps)
    kv = torch.einsum("bhnm,bhnd->bhnmd", phi_k, v).cumsum(dim=2)  # (B, H, T, M, D) prefix sums
    z = phi_k.cumsum(dim=2)  # (B, H, T, M)
    num = torch.einsum("bhnm,bhnmd->bhnd", phi_q, kv)
    den = (phi_q * z).sum(dim=-1, keepdim=True)
    return num / den.clamp_min(eps)


@VARIANTS.register("linear")
class LinearAttention(Variant):
    """Linear attention (Katharopoulos et al. 2020): feature map elu(x) + 1; causal via cumulative sums."""

    name = "linear"

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_padding: Tensor | None = None) -> Tensor:
        return _linear_attention(F.elu(q) + 1, _zero_padding(F.elu(k) + 1, key_padding), v, self.causal)


def orthogonal_gaussian(m: int, d: int, generator: torch.Generator | None = None) -> Tensor:
    """m x d random features: blocks of orthogonal rows, norms chi-distributed (Choromanski et al. 2021)."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        g = torch.randn(d, d, generator=generator)
        qm, _ = torch.linalg.qr(g)
        blocks.append(qm.T)
    w = torch.cat(blocks)[:m]
    norms = torch.randn(m, d, generator=generator).norm(dim=1)
    return w * norms[:, None]


@VARIANTS.register("performer")
class Performer(Variant):
    """Performer FAVOR+ (Choromanski et al. 2021): positive orthogonal random features."""

    name = "performer"

    def __init__(self, n_heads: int, head_dim: int, max_len: int, causal: bool, features: int = 64,
                 seed: int = 0, **_: float) -> None:
        super().__init__(n_heads, head_dim, max_len, causal)
        g = torch.Generator().manual_seed(int(seed))
        w = orthogonal_gaussian(int(features), head_dim, g)
        self.register_buffer("w", w)
        # w.x - |x|^2/2 <= |w|^2/2 for every x: subtracting max |w|^2/2 bounds the exponent by 0 without
        # looking at the data, so the stabiliser is the same constant for every key (and stays causal)
        self.register_buffer("shift", (w ** 2).sum(dim=1).max() / 2)

    def phi(self, x: Tensor, per_row: bool = False) -> Tensor:
        """exp(w.x - |x|^2 / 2) / sqrt(m) (FAVOR+ positive features, up to a constant that cancels)."""
        x = x * self.head_dim ** -0.25  # so that phi(q).phi(k) estimates exp(q.k / sqrt(d))
        expo = torch.einsum("bhnd,md->bhnm", x, self.w.to(x.dtype)) - (x ** 2).sum(dim=-1, keepdim=True) / 2
        expo = expo - (expo.amax(dim=-1, keepdim=True).detach() if per_row else self.shift)
        return torch.exp(expo) / math.sqrt(self.w.shape[0])

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_padding: Tensor | None = None) -> Tensor:
        # a per-query constant cancels between numerator and denominator of that query
        return _linear_attention(self.phi(q, per_row=True), _zero_padding(self.phi(k), key_padding), v,
                                 self.causal)


@VARIANTS.register("fnet")
class FNetMixing(Variant):
    """FNet (Lee-Thorp et al. 2022): the attention sublayer replaced by Re(FFT over hidden and sequence)."""

    supports_causal = False
    mixes_input = True
    name = "fnet"
    accepts = ("none", "additive")

    def why_not_causal(self) -> str:
        return "the Fourier transform over the sequence mixes every position into every output"

    def mix(self, x: Tensor) -> Tensor:
        return torch.fft.fft2(x.float(), dim=(-2, -1)).real.to(x.dtype)  # (B, T, d)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:  # pragma: no cover - FNet mixes x
        raise RuntimeError("fnet mixes the block input; call mix(x)")


@VARIANTS.register("probsparse")
class ProbSparse(Variant):
    """Informer ProbSparse (Zhou et al. 2021): full attention for the top u = c ln L queries, mean(V) for the rest."""

    supports_causal = False
    name = "probsparse"

    def why_not_causal(self) -> str:
        return "its top-u query selection compares queries across the whole sequence"

    def __init__(self, n_heads: int, head_dim: int, max_len: int, causal: bool, factor: float = 5.0,
                 top_u: int = 0, **_: float) -> None:
        super().__init__(n_heads, head_dim, max_len, causal)
        self.factor, self.top_u = float(factor), int(top_u)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_padding: Tensor | None = None) -> Tensor:
        b, h, tq, d = q.shape
        tk = k.shape[-2]
        scale = 1.0 / math.sqrt(d)
        n_sample = min(tk, int(self.factor * math.ceil(math.log(tk + 1))))
        u = min(tq, self.top_u or int(self.factor * math.ceil(math.log(tq + 1))))
        idx = torch.randint(tk, (tq, n_sample), device=q.device)  # sampled keys per query
        k_sample = k[:, :, idx]  # (B, H, Tq, S, D)
        qk = torch.einsum("bhqd,bhqsd->bhqs", q, k_sample) * scale
        real = torch.ones(b, tk, dtype=torch.bool, device=q.device) if key_padding is None else ~key_padding
        n_real = real.sum(dim=-1).clamp(min=1)[:, None, None]  # (B, 1, 1)
        sampled_real = real[:, idx][:, None]  # (B, 1, Tq, S)
        # M(q) = max - mean over the sampled real keys (Informer eq. 4)
        sparsity = (qk.masked_fill(~sampled_real, float("-inf")).amax(dim=-1)
                    - qk.masked_fill(~sampled_real, 0.0).sum(dim=-1) / n_real)
        top = sparsity.topk(u, dim=-1).indices  # (B, H, u)
        v_real = _zero_padding(v, key_padding)
        out = (v_real.sum(dim=-2, keepdim=True) / n_real[..., None]).expand(b, h, tq, d).clone()  # lazy: mean(V)
        q_top = torch.gather(q, 2, top[..., None].expand(b, h, u, d))
        scores = q_top @ k.transpose(-2, -1) * scale  # (B, H, u, Tk)
        if key_padding is not None:
            scores = padding_bias(key_padding, scores.dtype, scores)
        attn = torch.softmax(scores, dim=-1) @ v  # (B, H, u, D)
        out.scatter_(2, top[..., None].expand(b, h, u, d), attn)
        return out


__all__ = ["VARIANTS", "Variant", "build_variant", "orthogonal_gaussian"]
