"""Notebook 04: speed and memory of exact and efficient attention vs sequence length.

LRA (Tay et al. 2021, Table 2) timed whole models on TPUs; Linformer (Wang et al. 2020,
Table 3) and FNet (Lee-Thorp et al. 2022) report speed-ups of their layers. This notebook
times the attention operation alone (one layer, forward and forward+backward) on the
machine at hand, so it compares *scaling* and *ratios*, not absolute steps/s.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from typing_extensions import Self

from ..attention import ATTENTION, AttentionSpec
from ..bench.attention import BIAS_BACKENDS, bench_attention, crossover_lengths, scaling_exponents
from ..claims import Measured, claim, select
from ..config import Config, one_of
from ..errors import ConfigError

NAME = "04_efficient_attention_speed"
# the papers' settings where a variant has parameters: Linformer Table 3 (k = 128 at n = 4096), Performer
# and the local window at the same size
PAPER_PARAMS = {"linformer": {"k": 128}, "performer": {"features": 128}, "local": {"window": 128}}


def every_variant() -> tuple[dict[str, object], ...]:
    """Every registered attention path (exact and efficient), with the papers' parameters where they have any."""
    names = sorted(ATTENTION.names(), key=lambda n: (not ATTENTION[n].exact, n))  # exact backends first
    return tuple({"name": n, **PAPER_PARAMS.get(n, {})} for n in names)


class AttentionSpeedConfig(Config):
    """Time and peak memory of one attention layer per variant and length."""

    variants: tuple[AttentionSpec, ...] = Field(default_factory=every_variant,
                                                description="attention paths timed (default: every registered one)")
    bias_backends: tuple[one_of(BIAS_BACKENDS), ...] = Field(
        BIAS_BACKENDS, description="exact backends also timed with an ALiBi bias (alibi/<backend>)")
    lengths: tuple[Annotated[int, Field(ge=16)], ...] = (256, 512, 1024, 2048, 4096)
    batch: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    head_dim: int = Field(32, ge=2)
    causal: bool = Field(False, description="LRA's tasks are bidirectional (encoders)")
    repeats: int = Field(5, ge=1)
    warmup: int = Field(2, ge=0)
    memory: bool = True

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(set(self.lengths)) < 2:
            raise ConfigError(f"lengths = {list(self.lengths)}: need at least two lengths to fit a scaling exponent")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ConfigError(f"variants = {names}: duplicates")
        return self


def run(cfg: AttentionSpeedConfig, progress: bool = True) -> pd.DataFrame:
    """The timing grid (experiment=timing), scaling exponents and crossover lengths as one tidy frame."""
    df = bench_attention(cfg.variants, tuple(sorted(cfg.lengths)), cfg.batch, cfg.heads, cfg.head_dim, cfg.causal,
                         repeats=cfg.repeats, warmup=cfg.warmup, memory=cfg.memory, progress=progress,
                         bias_backends=cfg.bias_backends)
    parts = [df.assign(experiment="timing"), scaling_exponents(df).assign(experiment="exponent")]
    for mode in ("fwd", "fwd+bwd"):
        parts.append(crossover_lengths(df, "eager", mode).assign(experiment="crossover"))
    return pd.concat(parts, ignore_index=True)


# LRA Table 2: steps per second (TPU, whole models, byte-level text classification) and memory (GB).
LRA_SPEED = pd.DataFrame(
    [("Transformer", 8.1, 4.9, 2.3, 1.4, 9.48), ("Linformer", 9.3, 9.1, 8.5, 7.7, 0.99),
     ("Performer", 9.5, 9.4, 8.7, 8.0, 1.12), ("Linear Trans.", 9.3, 9.1, 8.5, 7.8, 1.33),
     ("Local Attention", 9.2, 8.8, 8.1, 7.3, 1.37)],
    columns=["model", "1K", "2K", "3K", "4K", "memory_4K_GB"])
# Linformer Table 3 (inference, n = 4096, k = 128): 3.4x faster, 14x less memory than a standard Transformer.
LINFORMER_N4096_K128 = {"speedup": 3.4, "memory_saving": 14.0}


def speed_vs_lra(results: pd.DataFrame, mode: str = "fwd+bwd") -> pd.DataFrame:
    """Our speed relative to materialized exact attention (eager), at each length, beside LRA's ratios."""
    t = select(results, experiment="timing", mode=mode, status="ok").pivot_table(
        index="variant", columns="length", values="time_s")
    if "eager" not in t.index:
        return pd.DataFrame()
    return (t.loc["eager"] / t).round(2)


def _time(results: pd.DataFrame, variant: str, length: int, mode: str) -> float:
    r = select(results, experiment="timing", variant=variant, length=length, mode=mode, status="ok")
    return float(r["time_s"].iloc[0]) if len(r) else float("nan")


def _exponent(results: pd.DataFrame, variant: str, mode: str, col: str = "time_exponent") -> float:
    r = select(results, experiment="exponent", variant=variant, mode=mode)
    return float(r[col].iloc[0]) if len(r) and col in r else float("nan")


@claim("linear_variants_scale_linearly", notebook=NAME, paper="Tay et al. 2021 (LRA), Table 2; Wang et al. 2020",
       min_profile="cpu", statement="Linformer, Performer and linear attention time grows near-linearly with length",
       paper_value="steps/s nearly flat 1K -> 4K (Linformer 9.3 -> 7.7) vs Transformer 8.1 -> 1.4",
       threshold="fitted log-log time exponent (fwd, upper half of lengths) <= 1.3 for each")
def _linear_scaling(df: pd.DataFrame) -> Measured:
    ex = {v: _exponent(df, v, "fwd") for v in ("linformer", "performer", "linear")}
    if any(np.isnan(x) for x in ex.values()):
        return Measured("missing: " + ", ".join(k for k, x in ex.items() if np.isnan(x)), None)
    return Measured(", ".join(f"{k} {x:.2f}" for k, x in ex.items()), all(x <= 1.3 for x in ex.values()))


@claim("materialized_attention_scales_quadratically", notebook=NAME, paper="Vaswani et al. 2017; Tay et al. 2021",
       min_profile="cpu", statement="attention that materializes the scores costs time and memory quadratic in length",
       paper_value="O(n^2) time and memory",
       threshold="eager fwd exponents: time >= 1.7 and memory >= 1.7")
def _quadratic(df: pd.DataFrame) -> Measured:
    t, m = _exponent(df, "eager", "fwd"), _exponent(df, "eager", "fwd", "memory_exponent")
    if np.isnan(t):
        return Measured("no eager timing", None)
    ok = t >= 1.7 and (np.isnan(m) or m >= 1.7)
    return Measured(f"time exponent {t:.2f}, memory exponent {m:.2f}", None if np.isnan(m) else bool(ok))


@claim("fused_memory_linear", notebook=NAME, paper="Dao et al. 2022; Dong et al. 2024 (FlexAttention)",
       min_profile="cpu", statement="fused exact attention (sdpa, flex) needs memory linear in length",
       paper_value="O(n) memory for fused attention",
       threshold="fwd memory exponent <= 1.3 for sdpa and for each measured flex variant (flex, alibi/flex)")
def _fused_memory(df: pd.DataFrame) -> Measured:
    ex = {v: _exponent(df, v, "fwd", "memory_exponent") for v in ("sdpa", "flex", "alibi/flex")}
    ex = {v: m for v, m in ex.items() if v == "sdpa" or not np.isnan(m)}  # flex: only where it was measured
    if np.isnan(ex["sdpa"]):
        return Measured("no memory measurement", None)
    eager = _exponent(df, "eager", "fwd", "memory_exponent")
    return Measured(", ".join(f"{v} memory exponent {m:.2f}" for v, m in ex.items()) + f" (eager {eager:.2f})",
                    all(m <= 1.3 for m in ex.values()))


@claim("linformer_faster_at_4k", notebook=NAME, paper="Wang et al. 2020 (Linformer), Table 3", min_profile="cpu",
       statement="at n = 4096, Linformer (k = 128) is faster than standard attention",
       paper_value="3.4x faster, 14x less memory (n = 4096, k = 128)",
       threshold="Linformer fwd+bwd time < eager fwd+bwd time at 4096")
def _linformer(df: pd.DataFrame) -> Measured:
    lf, ea, sd = (_time(df, v, 4096, "fwd+bwd") for v in ("linformer", "eager", "sdpa"))
    if np.isnan(lf) or np.isnan(ea):
        return Measured("no 4096 measurement", None)
    return Measured(f"{ea / lf:.1f}x faster than eager, {sd / lf:.1f}x vs sdpa", lf < ea)


@claim("fnet_faster_at_512", notebook=NAME, paper="Lee-Thorp et al. 2022 (FNet), sec. 4", min_profile="cpu",
       statement="FNet's Fourier mixing is faster than attention at length 512",
       paper_value="trains 80% faster than BERT on GPUs at 512",
       threshold="fnet fwd+bwd time < eager fwd+bwd time at 512")
def _fnet(df: pd.DataFrame) -> Measured:
    fn, ea = _time(df, "fnet", 512, "fwd+bwd"), _time(df, "eager", 512, "fwd+bwd")
    if np.isnan(fn) or np.isnan(ea):
        return Measured("no 512 measurement", None)
    return Measured(f"{ea / fn:.1f}x faster than eager attention", fn < ea)


@claim("flex_fused_bias_2x", notebook=NAME, paper="Dong et al. 2024 (FlexAttention)", min_profile="cpu",
       statement="a bias PE fused into FlexAttention (score_mod) beats SDPA with a materialized bias",
       paper_value="not a paper figure: an earlier measurement of this workbook, 2.3x at B=4, H=4, S=512, D=32",
       threshold="alibi/flex fwd at least 2x faster than alibi/sdpa fwd at 2048")
def _flex_bias(df: pd.DataFrame) -> Measured:
    fl, sd = _time(df, "alibi/flex", 2048, "fwd"), _time(df, "alibi/sdpa", 2048, "fwd")
    if np.isnan(fl) or np.isnan(sd):
        return Measured("no 2048 measurement", None)
    return Measured(f"{sd / fl:.2f}x", sd / fl >= 2.0)
