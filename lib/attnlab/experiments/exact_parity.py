"""Chiang & Cholak's (2022) exact transformer for PARITY, with weights set by hand, and its layer-norm form.

Two post-norm encoder layers read bit strings w_1..w_n followed by a read-out symbol CLS at
position n (input dims: 0 = bit 0, 1 = bit 1, 2 = CLS; position features 3 = i / (n + 1),
4 = cos(i pi)). Layer 1 attends uniformly, so dim 5 holds k / (n + 1) (k = number of ones)
and dim 6 holds 1 / (n + 1); its ReLU feed-forward computes the triangle
I[i = k] / (n + 1) into dim 7. Layer 2, queried from CLS, has one head that prefers even and
one that prefers odd positions; the difference of their averages of dim 7 lands in dim 8
and is positive exactly when k is odd. The classification is right at every n, but the
margin shrinks like 1 / n^2, so the cross-entropy tends to 1 bit (Hahn's lemma). The
layer-norm form doubles the width with the negated copy (so every vector has mean 0) and
cancels every dim but 8 before the last layer norm, which rescales the margin to O(1) as
long as eps is small against the squared margin. `log_scaling` multiplies each layer's
query input by ln(n + 1) (their ScaledTransformerEncoderLayer). Computed in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

D = 10  # the construction's width (doubled by the layer-norm form)


def _layer_weights(layernorm: bool, big: float) -> list[dict[str, Tensor]]:
    """The two layers' matrices (q, k, v, o: (d, d); w1: (f, d); w2: (d, f)), as in the paper's construction."""
    d = 2 * D if layernorm else D
    h = d // 2  # two heads
    z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
    # layer 1: uniform attention; head 1 averages the bit-1 and CLS indicators into dims 5, 6
    q1, k1, v1, o1 = z(d, d), z(d, d), z(d, d), z(d, d)
    v1[0, 1] = v1[1, 2] = 1.0
    o1[5, 0] = o1[6, 1] = 1.0
    w1 = z(3, d)
    for r, c6 in enumerate((-1.0, 0.0, 1.0)):  # (k - i - 1), (k - i), (k - i + 1), over n + 1
        w1[r, 3], w1[r, 5], w1[r, 6] = -1.0, 1.0, c6
    w2 = z(d, 3)
    w2[7] = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64)  # the triangle: I[i = k] / (n + 1)
    if layernorm:  # the negated copy in dims 10..19
        o1[15, 0] = o1[16, 1] = -1.0
        w2[17] = -w2[7]
    # layer 2: from CLS, head 1 prefers cos(i pi) = +1 (even i), head 2 odd i; both average dim 7
    q2, k2, v2, o2 = z(d, d), z(d, d), z(d, d), z(d, d)
    q2[0, 2] = q2[h, 2] = big
    k2[0, 4], k2[h, 4] = 1.0, -1.0
    v2[0, 7] = v2[h, 7] = 1.0
    o2[8, 0], o2[8, h] = -1.0, 1.0  # odd minus even into dim 8
    if layernorm:
        o2[18, 0], o2[18, h] = 1.0, -1.0
        w1b = torch.eye(d, dtype=torch.float64)
        w2b = torch.cat((torch.cat((-torch.eye(D), torch.eye(D)), 1), torch.cat((torch.eye(D), -torch.eye(D)), 1)))
        w2b = w2b.to(torch.float64)
        for a in (8, 18):  # keep dim 8 (and its copy): every other dim is cancelled
            w2b[a, 8] = w2b[a, 18] = 0.0
    else:
        w1b, w2b = z(3, d), z(d, 3)
    return [{"q": q1, "k": k1, "v": v1, "o": o1, "w1": w1, "w2": w2},
            {"q": q2, "k": k2, "v": v2, "o": o2, "w1": w1b, "w2": w2b}]


def _attention(x: Tensor, w: dict[str, Tensor], q_scale: float) -> Tensor:
    """Two-head softmax attention of (B, T, d) sequences, queries scaled by q_scale, 1/sqrt(head dim) inside."""
    b, t, d = x.shape
    hd = d // 2
    q = (x * q_scale) @ w["q"].T
    k, v = x @ w["k"].T, x @ w["v"].T
    q, k, v = (m.view(b, t, 2, hd).transpose(1, 2) for m in (q, k, v))  # (B, 2, T, hd)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)  # (B, 2, T, T)
    return (a @ v).transpose(1, 2).reshape(b, t, d) @ w["o"].T


def exact_parity_logits(bits: Tensor, *, layernorm: bool = False, log_scaling: bool = False, big: float = 1.0,
                        eps: float = 1e-5) -> Tensor:
    """The construction's outputs (B,) for bit strings (B, n): positive means an odd number of ones."""
    bsz, n = bits.shape
    w = torch.cat([bits.long(), torch.full((bsz, 1), 2)], dim=1)  # (B, n + 1): bits then CLS
    x = F.one_hot(w, D).to(torch.float64)  # (B, n + 1, D)
    pos = torch.arange(n + 1, dtype=torch.float64)
    x[..., 3] += pos / (n + 1)
    x[..., 4] += torch.cos(pos * math.pi)
    if layernorm:
        x = torch.cat([x, -x], dim=-1)  # (B, n + 1, 2D)
    s = math.log(n + 1) if log_scaling else 1.0
    norm = (lambda y: F.layer_norm(y, y.shape[-1:], eps=eps)) if layernorm else (lambda y: y)
    for lw in _layer_weights(layernorm, big):
        x = norm(x + _attention(x, lw, s))
        x = norm(x + torch.relu(x @ lw["w1"].T) @ lw["w2"].T)
    return x[:, -1, 8]


def evaluate(lengths: list[int], samples: int, seed: int = 0, chunk: int = 16, **kw: object) -> list[dict[str, object]]:
    """Per length and sample: correctness and cross-entropy (bits) of the construction (the same strings for
    every setting: paired)."""
    rows = []
    for n in lengths:
        bits = torch.from_numpy(np.random.default_rng(seed * 7919 + n).integers(0, 2, (samples, n)))
        z = torch.cat([exact_parity_logits(bits[i:i + chunk], **kw) for i in range(0, samples, chunk)])
        sign = torch.where(bits.sum(1) % 2 == 1, 1.0, -1.0).double()
        ce = -F.logsigmoid(z * sign) / math.log(2)
        rows += [{"length": n, "sample": i, "correct": float(c), "cross_entropy_bits": float(e)}
                 for i, (c, e) in enumerate(zip((z * sign > 0).tolist(), ce.tolist()))]
    return rows
