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
from ..claims import Condition, Measured, claim, select
from ..config import Config, one_of
from ..errors import ConfigError
from ..memo import memoized
from ..stats import crossed_bootstrap, point

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


@memoized
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


def _exponent(results: pd.DataFrame, variant: str, mode: str, col: str = "time_exponent") -> float:
    r = select(results, experiment="exponent", variant=variant, mode=mode)
    return float(r[col].iloc[0]) if len(r) and col in r else float("nan")


def _times(results: pd.DataFrame, variant: str, mode: str, lengths: list[int]) -> np.ndarray:
    """Repeat times (1, repeats, len(lengths)) of one variant (empty when a length is missing)."""
    r = select(results, experiment="timing", variant=variant, mode=mode, status="ok")
    cols = []
    for n in lengths:
        t = r[r["length"] == n]
        if t.empty or not isinstance(t["times"].iloc[0], list | tuple | np.ndarray):
            return np.empty((0, 0, len(lengths)))
        cols.append(np.asarray(t["times"].iloc[0], dtype=float))
    k = min(len(c) for c in cols)
    return np.stack([c[:k] for c in cols], axis=-1)[None]


def _upper_lengths(results: pd.DataFrame) -> list[int]:
    """The upper half of the measured lengths (where the asymptotic term dominates), as scaling_exponents."""
    ls = sorted(int(n) for n in select(results, experiment="timing")["length"].dropna().unique())
    return ls[len(ls) // 2 - (1 if len(ls) % 2 == 0 and len(ls) > 2 else 0):] if len(ls) > 2 else ls


def _slope(lengths: list[int]):  # noqa: ANN202
    x = np.log(np.asarray(lengths, dtype=float))
    return lambda a: float(np.polyfit(x, np.log(np.median(a.reshape(-1, a.shape[-1]), axis=0)), 1)[0])


def time_exponent(results: pd.DataFrame, variant: str, mode: str = "fwd"):  # noqa: ANN201
    """Log-log time exponent over the upper lengths with its interval over repeats (None: missing)."""
    ls = _upper_lengths(results)
    d = _times(results, variant, mode, ls)
    return crossed_bootstrap(d, _slope(ls)) if d.size and len(ls) >= 2 else None


def speedup(results: pd.DataFrame, baseline: str, variant: str, length: int, mode: str):  # noqa: ANN201
    """Median time of `baseline` / median time of `variant` at `length`, interval over repeats (None: missing)."""
    a, b = _times(results, baseline, mode, [length]), _times(results, variant, mode, [length])
    if a.size == 0 or b.size == 0:
        return None
    k = min(a.shape[1], b.shape[1])
    d = np.concatenate([a[:, :k], b[:, :k]], axis=-1)
    return crossed_bootstrap(d, lambda x: float(np.median(x[..., 0]) / np.median(x[..., 1])))


@claim("linear_variants_scale_linearly", notebook=NAME, paper="Tay et al. 2021 (LRA), Table 2; Wang et al. 2020",
       min_profile="cpu", kind="measurement",
       statement="Linformer, Performer and linear attention time grows near-linearly with length",
       paper_value="steps/s nearly flat 1K -> 4K (Linformer 9.3 -> 7.7) vs Transformer 8.1 -> 1.4",
       threshold="fitted log-log time exponent (fwd, upper half of lengths), 95% interval over repeats, wholly "
       "<= 1.3 for each")
def _linear_scaling(df: pd.DataFrame) -> Measured:
    ex = {v: time_exponent(df, v) for v in ("linformer", "performer", "linear")}
    if any(e is None for e in ex.values()):
        return Measured.missing("missing: " + ", ".join(k for k, e in ex.items() if e is None))
    return Measured(", ".join(f"{k} {e.text('.2f')}" for k, e in ex.items()),
                    tuple(Condition(f"{k} exponent", e, "<=", 1.3) for k, e in ex.items()), seeded=False)


@claim("materialized_attention_scales_quadratically", notebook=NAME, paper="Vaswani et al. 2017; Tay et al. 2021",
       min_profile="cpu", kind="measurement",
       statement="attention that materializes the scores costs time and memory quadratic in length",
       paper_value="O(n^2) time and memory",
       threshold="eager fwd exponents: time (95% interval over repeats) wholly >= 1.7 and memory >= 1.7")
def _quadratic(df: pd.DataFrame) -> Measured:
    t, m = time_exponent(df, "eager"), _exponent(df, "eager", "fwd", "memory_exponent")
    if t is None or np.isnan(m):
        return Measured.missing("no eager timing or memory")
    return Measured(f"time exponent {t.text('.2f')}, memory exponent {m:.2f}",
                    (Condition("time exponent", t, ">=", 1.7), Condition("memory exponent", point(m), ">=", 1.7)),
                    seeded=False)


@claim("fused_memory_linear", notebook=NAME, paper="Dao et al. 2022; Dong et al. 2024 (FlexAttention)",
       min_profile="cpu", kind="measurement",
       statement="fused exact attention (sdpa, flex) needs memory linear in length",
       paper_value="O(n) memory for fused attention",
       threshold="fwd memory exponent <= 1.3 for sdpa and for each measured flex variant (flex, alibi/flex)")
def _fused_memory(df: pd.DataFrame) -> Measured:
    ex = {v: _exponent(df, v, "fwd", "memory_exponent") for v in ("sdpa", "flex", "alibi/flex")}
    ex = {v: m for v, m in ex.items() if v == "sdpa" or not np.isnan(m)}  # flex: only where it was measured
    if np.isnan(ex["sdpa"]):
        return Measured.missing("no memory measurement")
    eager = _exponent(df, "eager", "fwd", "memory_exponent")
    return Measured(", ".join(f"{v} memory exponent {m:.2f}" for v, m in ex.items()) + f" (eager {eager:.2f})",
                    tuple(Condition(f"{v} memory exponent", point(m), "<=", 1.3) for v, m in ex.items()),
                    seeded=False)


LINFORMER_FACTOR = LINFORMER_N4096_K128["speedup"]  # Linformer Table 3
FNET_FACTOR = 1.8  # FNet sec. 4: "80% faster" than BERT at 512 on GPUs


@claim("linformer_faster_at_4k", notebook=NAME, paper="Wang et al. 2020 (Linformer), Table 3", min_profile="cpu",
       kind="measurement", statement="at n = 4096, Linformer (k = 128) is 3.4x faster than standard attention",
       paper_value="3.4x faster, 14x less memory (n = 4096, k = 128; inference)",
       threshold=f"sdpa / linformer fwd time at 4096, 95% interval over repeats, wholly >= {LINFORMER_FACTOR}")
def _linformer(df: pd.DataFrame) -> Measured:
    s = speedup(df, "sdpa", "linformer", 4096, "fwd")
    if s is None:
        return Measured.missing("no 4096 measurement of sdpa and linformer")
    return Measured(f"linformer {s.text('.2f')}x faster than sdpa (fwd, 4096)",
                    (Condition("sdpa / linformer", s, ">=", LINFORMER_FACTOR),), seeded=False)


ICEFORMER_FACTOR = 2.73  # Mao et al. 2024: 2.73-7.63x faster on CPUs (the lower end)


@claim("iceformer_faster_at_longest", notebook=NAME, paper="Mao et al. 2024 (IceFormer), abstract", min_profile="cpu",
       kind="measurement",
       statement="at inference on a CPU, top-k attention by k-NN search is several times faster than exact attention",
       paper_value="2.73-7.63x faster than the original attention on CPUs, LRA and long-context LLMs",
       threshold=f"sdpa / iceformer fwd time at the longest length, 95% interval over repeats, wholly >= "
                 f"{ICEFORMER_FACTOR}")
def _iceformer(df: pd.DataFrame) -> Measured:
    ice = select(df, variant="iceformer", mode="fwd")
    if ice.empty:
        return Measured.missing("iceformer not timed")
    n = int(ice["length"].max())
    s = speedup(df, "sdpa", "iceformer", n, "fwd")
    if s is None:
        return Measured.missing(f"no {n} measurement of sdpa and iceformer")
    return Measured(f"iceformer {s.text('.2f')}x as fast as sdpa (fwd, {n}; faiss HNSW built per call)",
                    (Condition("sdpa / iceformer", s, ">=", ICEFORMER_FACTOR),), seeded=False)


@claim("fnet_faster_at_512", notebook=NAME, paper="Lee-Thorp et al. 2022 (FNet), sec. 4", min_profile="cpu",
       kind="measurement", statement="FNet's Fourier mixing is 80% faster than attention at length 512",
       paper_value="trains 80% faster than BERT on GPUs at 512",
       threshold=f"sdpa / fnet fwd+bwd time at 512, 95% interval over repeats, wholly >= {FNET_FACTOR}")
def _fnet(df: pd.DataFrame) -> Measured:
    s = speedup(df, "sdpa", "fnet", 512, "fwd+bwd")
    if s is None:
        return Measured.missing("no 512 measurement of sdpa and fnet")
    return Measured(f"fnet {s.text('.2f')}x faster than sdpa (fwd+bwd, 512)",
                    (Condition("sdpa / fnet", s, ">=", FNET_FACTOR),), seeded=False)


@claim("flex_fused_bias_not_slower", notebook=NAME, paper="Dong et al. 2024 (FlexAttention)", min_profile="gpu",
       kind="measurement",
       statement="a bias PE fused into FlexAttention (score_mod) is not slower than SDPA with a materialized bias "
       "(GPU; on CPU the notebook shows the comparison as a measurement)",
       paper_value="FlexAttention's GPU kernels for bias variants such as ALiBi run at the speed of hand-written "
       "fused kernels, above a materialized bias (Dong et al. 2024)",
       threshold="alibi/sdpa / alibi/flex fwd time at the longest length, 95% interval over repeats, wholly >= 1.0")
def _flex_bias(df: pd.DataFrame) -> Measured:
    ls = sorted(int(n) for n in select(df, experiment="timing")["length"].dropna().unique())
    s = speedup(df, "alibi/sdpa", "alibi/flex", ls[-1], "fwd") if ls else None
    if s is None:
        return Measured.missing("no alibi/flex and alibi/sdpa measurement")
    return Measured(f"alibi/flex {s.text('.2f')}x vs alibi/sdpa (fwd, {ls[-1]})",
                    (Condition("alibi/sdpa / alibi/flex", s, ">=", 1.0),), seeded=False)
