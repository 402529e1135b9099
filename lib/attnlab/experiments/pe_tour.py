"""Notebook 01: a visual tour of the positional encodings, with no training.

Each function returns a tidy DataFrame (columns: experiment, encoding, x, value, ...) that
the notebook plots and the claims below check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from pydantic import Field, model_validator
from typing_extensions import Self

from ..claims import Measured, claim, select
from ..config import Config
from ..errors import ConfigError
from ..memo import memoized
from ..positional import (
    PEDims,
    alibi_slopes,
    apply_rotation,
    build_encoding,
    rope_inv_freq,
    sinusoidal_table,
    t5_relative_bucket,
)

NAME = "01_positional_encodings"
BIAS_ENCODINGS = ("alibi", "t5", "kerple", "fire", "shaw")


class PETourConfig(Config):
    """Parameters of notebook 01 (no training; all sizes are analysis sizes)."""

    head_dim: int = Field(128, ge=2, description="RoPE/XPos head size (RoFormer Fig. 2 uses 128)")
    d_model: int = Field(128, ge=2, description="sinusoidal embedding size")
    n_heads: int = Field(8, ge=1)
    max_distance: int = Field(256, ge=8, description="distances for decay and resolution curves")
    bias_length: int = Field(64, ge=2, description="size of the bias matrices shown")
    offset_trials: int = Field(64, ge=1, description="random (q, k, m, n, shift) draws for offset-only tests")
    max_heads_checked: int = Field(64, ge=1, description="ALiBi slopes checked against BLOOM for 1..N heads")
    t5_range: int = Field(300, ge=1, description="T5 buckets checked over -R..R")
    randomized_max_len: int = Field(256, ge=2)
    randomized_length: int = Field(16, ge=1)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.head_dim % 2 or self.d_model % 2:
            raise ConfigError(f"head_dim = {self.head_dim}, d_model = {self.d_model}: both must be even")
        if self.randomized_length > self.randomized_max_len:
            raise ConfigError(f"randomized_length = {self.randomized_length}: must be <= randomized_max_len "
                              f"= {self.randomized_max_len}")
        return self


def rope_decay_bound(head_dim: int, max_distance: int, theta: float = 10000.0) -> np.ndarray:
    """RoFormer sec. 3.4.3: relative upper bound (1/(d/2)) sum_j |S_j|, S_j = sum_{i<j} e^{i r theta_i}."""
    inv = rope_inv_freq(head_dim, theta).double()  # (d/2,)
    r = torch.arange(max_distance + 1, dtype=torch.float64)[:, None]  # (R, 1)
    s = torch.cumsum(torch.exp(1j * r * inv[None, :]), dim=1)  # (R, d/2): S_1..S_{d/2}
    return (s.abs().sum(dim=1) / (head_dim // 2)).numpy()


def expected_scores(encoding: str, head_dim: int, max_distance: int, gamma: float = 512.0) -> np.ndarray:
    """Score q.k with q = k = 1 at distance n = 0..N, averaged over dimension pairs (RoPE / XPos)."""
    pe = build_encoding({"name": encoding, "gamma": gamma} if encoding == "xpos" else encoding,
                        PEDims(head_dim, 1, head_dim))
    n = max_distance + 1
    pos = torch.arange(n)
    rot = pe.rotation(pos)
    ones = torch.ones(1, 1, n, head_dim)
    q = apply_rotation(ones, rot, "q")[0, 0, -1:]  # query at the last position, (1, D)
    k = apply_rotation(ones, rot, "k")[0, 0]  # (N, D)
    s = (k @ q[0]) / head_dim  # (N,) score with key at position j
    return s.flip(0).double().numpy()  # index = distance query - key


def attention_resolution(scores: np.ndarray) -> float:
    """XPos (Sun et al. 2023, eq. 5): R(s) = sum e^{s_i}(e^{s_i} - e^{s_{i+1}}) / (sum e^{s_i})^2."""
    e = np.exp(np.asarray(scores, dtype=np.float64))
    return float((e[:-1] * (e[:-1] - e[1:])).sum() / e.sum() ** 2)


def decay_curves(cfg: PETourConfig) -> pd.DataFrame:
    """RoPE long-term decay bound, and RoPE vs XPos expected scores with their resolution."""
    d = np.arange(cfg.max_distance + 1)
    rows = [pd.DataFrame({"experiment": "rope_decay_bound", "encoding": "rope", "x": d,
                          "value": rope_decay_bound(cfg.head_dim, cfg.max_distance)})]
    for enc in ("rope", "xpos"):
        s = expected_scores(enc, cfg.head_dim, cfg.max_distance)
        rows.append(pd.DataFrame({"experiment": "expected_score", "encoding": enc, "x": d, "value": s}))
        rows.append(pd.DataFrame([{"experiment": "resolution", "encoding": enc, "x": cfg.max_distance,
                                   "value": attention_resolution(s)}]))
    return pd.concat(rows, ignore_index=True)


def offset_invariance(cfg: PETourConfig) -> pd.DataFrame:
    """Max relative change of q.k (RoPE) and PE(m).PE(n) (sinusoidal) when both positions shift."""
    g = torch.Generator().manual_seed(cfg.seed)
    pe = build_encoding("rope", PEDims(cfg.head_dim, 1, cfg.head_dim))
    rope_err, sin_err, scale_r, scale_s = 0.0, 0.0, 0.0, 0.0
    for _ in range(cfg.offset_trials):
        q = torch.randn(1, 1, 1, cfg.head_dim, generator=g)
        k = torch.randn(1, 1, 1, cfg.head_dim, generator=g)
        m, n, shift = (int(v) for v in torch.randint(0, cfg.max_distance, (3,), generator=g))
        scores = []
        for s in (0, shift):
            rq, rk = pe.rotation(torch.tensor([m + s])), pe.rotation(torch.tensor([n + s]))
            scores.append(float((apply_rotation(q, rq, "q") * apply_rotation(k, rk, "k")).sum()))
        rope_err = max(rope_err, abs(scores[1] - scores[0]))
        scale_r = max(scale_r, abs(scores[0]))
        t = sinusoidal_table(torch.tensor([m, n, m + shift, n + shift]), cfg.d_model)
        a, b = float(t[0] @ t[1]), float(t[2] @ t[3])
        sin_err = max(sin_err, abs(a - b))
        scale_s = max(scale_s, abs(a))
    rows = [
        {"experiment": "offset_invariance", "encoding": "rope", "x": cfg.offset_trials,
         "value": rope_err / max(scale_r, 1e-12)},
        {"experiment": "offset_invariance", "encoding": "sinusoidal", "x": cfg.offset_trials,
         "value": sin_err / max(scale_s, 1e-12)},
    ]
    return pd.DataFrame(rows)


def sinusoidal_dot_products(cfg: PETourConfig) -> pd.DataFrame:
    """PE(m) . PE(m + offset) for several anchors m: the curves coincide (offset-only dependence)."""
    rows = []
    for m in (0, cfg.max_distance // 4, cfg.max_distance // 2):
        pos = torch.arange(m, m + cfg.max_distance + 1)
        t = sinusoidal_table(pos, cfg.d_model)
        dots = (t[1:] @ t[0]).numpy() if len(t) > 1 else np.array([])
        rows.append(pd.DataFrame({"experiment": "sinusoidal_dot", "encoding": "sinusoidal", "anchor": m,
                                  "x": np.arange(1, len(t)), "value": dots}))
    return pd.concat(rows, ignore_index=True)


def reference_checks(cfg: PETourConfig) -> pd.DataFrame:
    """ALiBi slopes vs BLOOM's build_alibi_tensor and T5 buckets vs T5Attention, both in transformers."""
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor
    from transformers.models.t5.modeling_t5 import T5Attention

    worst = 0.0
    for h in range(1, cfg.max_heads_checked + 1):
        ref = build_alibi_tensor(torch.ones(1, 2), h, torch.float32).reshape(h, 2)[:, 1]  # slope * 1
        worst = max(worst, float((ref - alibi_slopes(h)).abs().max()))
    rel = torch.arange(-cfg.t5_range, cfg.t5_range + 1)
    mismatches = {}
    for bidirectional in (True, False):
        ref = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional)
        mismatches[bidirectional] = int((ref != t5_relative_bucket(rel, bidirectional)).sum())
    return pd.DataFrame([
        {"experiment": "reference", "encoding": "alibi", "x": cfg.max_heads_checked, "value": worst},
        {"experiment": "reference", "encoding": "t5_bidirectional", "x": len(rel), "value": mismatches[True]},
        {"experiment": "reference", "encoding": "t5_causal", "x": len(rel), "value": mismatches[False]},
    ])


def bias_matrices(cfg: PETourConfig, causal: bool = True) -> dict[str, np.ndarray]:
    """Head-0 bias (Tq, Tk) of each bias PE at initialization (Shaw: contracted with a fixed q)."""
    torch.manual_seed(cfg.seed)
    pos = torch.arange(cfg.bias_length)
    out = {}
    for name in BIAS_ENCODINGS:
        pe = build_encoding(name, PEDims(cfg.n_heads * 16, cfg.n_heads, 16, causal))
        with torch.no_grad():
            b = pe.bias(pos, pos)
            if pe.query_dependent:
                q = torch.randn(16)
                b = (b @ q)[None]  # (1, Tq, Tk)
            b = b[0].clone()
            if causal:
                b[~torch.ones_like(b, dtype=torch.bool).tril()] = float("nan")
        out[name] = b.numpy()
    return out


def randomized_positions(cfg: PETourConfig, draws: int = 8) -> pd.DataFrame:
    """Draws of the randomized-PE positions (Ruoss et al. 2023): sorted, distinct, in [0, L_max)."""
    pe = build_encoding({"name": "randomized", "base": "rope", "max_len": cfg.randomized_max_len},
                        PEDims(cfg.head_dim, 1, cfg.head_dim))
    g = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for d in range(draws):
        p = pe.default_positions(cfg.randomized_length, generator=g)
        rows.append(pd.DataFrame({"experiment": "randomized_positions", "encoding": "randomized", "draw": d,
                                  "x": np.arange(len(p)), "value": p.numpy()}))
    return pd.concat(rows, ignore_index=True)


@memoized
def run(cfg: PETourConfig) -> pd.DataFrame:
    """Every measurement of notebook 01 as one tidy frame."""
    return pd.concat([decay_curves(cfg), offset_invariance(cfg), sinusoidal_dot_products(cfg),
                      reference_checks(cfg), randomized_positions(cfg)], ignore_index=True)


# ----------------------------------------------------------------------------- claims


@claim("rope_long_term_decay", notebook=NAME, paper="Su et al. (RoFormer), sec. 3.4.3, Fig. 2",
       statement="RoPE's relative upper bound on q.k decays with relative distance",
       paper_value="Fig. 2: the bound falls as the relative distance grows (d = 128, distances to ~250)",
       threshold="mean bound over the last quarter of distances < 0.5 x bound at distance 0")
def _rope_decay(df: pd.DataFrame) -> Measured:
    b = select(df, experiment="rope_decay_bound").sort_values("x")
    if b.empty:
        return Measured.missing("no data")
    v = b["value"].to_numpy()
    ratio = float(v[3 * len(v) // 4:].mean() / v[0])
    return Measured.exact(f"ratio {ratio:.3f} (bound {v[0]:.1f} at 0)", "late / initial bound", ratio, "<", 0.5)


@claim("rope_offset_only", notebook=NAME, kind="check", paper="Su et al. (RoFormer), eq. 16",
       statement="RoPE's q.k depends only on the offset m - n",
       paper_value="exact (translation invariant)",
       threshold="max relative change under a common shift of both positions < 1e-3 (float32)")
def _rope_offset(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="offset_invariance", encoding="rope")
    if r.empty:
        return Measured.missing("no data")
    v = float(r["value"].iloc[0])
    return Measured.exact(f"max relative change {v:.2e}", "max relative change", v, "<", 1e-3)


@claim("sinusoidal_offset_only", notebook=NAME, kind="check", paper="Vaswani et al. 2017, sec. 3.5",
       statement="PE(m) . PE(n) of sinusoidal embeddings depends only on m - n",
       paper_value="exact: sum_i cos((m - n) w_i)",
       threshold="max relative change under a common shift < 1e-3 (float32)")
def _sin_offset(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="offset_invariance", encoding="sinusoidal")
    if r.empty:
        return Measured.missing("no data")
    v = float(r["value"].iloc[0])
    return Measured.exact(f"max relative change {v:.2e}", "max relative change", v, "<", 1e-3)


@claim("alibi_slopes_match_bloom", notebook=NAME, kind="check", paper="Press et al. (ALiBi), sec. 3",
       statement="ALiBi slopes equal transformers' BLOOM build_alibi_tensor for every head count",
       paper_value="2^(-8k/n); interleaved rule for non-powers of 2",
       threshold="max |difference| <= 1e-6 over 1..N heads")
def _alibi_ref(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="reference", encoding="alibi")
    if r.empty:
        return Measured.missing("no data")
    v = float(r["value"].iloc[0])
    return Measured.exact(f"max |diff| {v:.1e} over 1..{int(r['x'].iloc[0])} heads", "max |diff|", v, "<=", 1e-6)


@claim("t5_buckets_match_transformers", notebook=NAME, kind="check", paper="Raffel et al. (T5), sec. 2.1",
       statement="T5 relative buckets equal transformers' T5Attention._relative_position_bucket",
       paper_value="32 buckets, max distance 128, log-spaced beyond 8 (16 causal)",
       threshold="0 mismatches over -R..R, bidirectional and causal")
def _t5_ref(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="reference")
    r = r[r["encoding"].astype(str).str.startswith("t5")]
    if len(r) < 2:
        return Measured.missing("no data")
    n = int(r["value"].sum())
    return Measured.exact(f"{n} mismatches over {int(r['x'].iloc[0])} offsets x 2 modes", "mismatches", n, "<=", 0)


@claim("xpos_resolution_not_below_rope", notebook=NAME, paper="Sun et al. (XPos), sec. 3",
       statement="XPos's attention resolution is not below RoPE's",
       paper_value="XPos designed to maximize resolution R(s)",
       threshold="R(xpos) >= R(rope) on the expected-score curve (q = k = 1) over 0..max_distance")
def _xpos_res(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="resolution").set_index("encoding")["value"]
    if not {"rope", "xpos"} <= set(r.index):
        return Measured.missing("no data")
    return Measured.exact(f"R(xpos) = {r['xpos']:.4g}, R(rope) = {r['rope']:.4g}", "R(xpos) - R(rope)",
                          float(r["xpos"] - r["rope"]), ">=", 0.0)


__all__ = ["PETourConfig", "run", "decay_curves", "offset_invariance", "sinusoidal_dot_products",
           "reference_checks", "bias_matrices", "randomized_positions", "rope_decay_bound",
           "expected_scores", "attention_resolution"]
