"""``attnlab bench attention`` and notebook 04: time and peak memory of one attention layer vs length.

Every registered attention path (exact backends and efficient variants, with their parameters)
and ALiBi-biased exact attention, materialized or fused as a FlexAttention score_mod. Exact
paths are checked against the eager reference before anything is timed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..attention import ATTENTION, AttentionSpec, AttnDims, build_attention, flex_attention_backend
from ..errors import ConfigError
from ..positional import PEDims, build_encoding, score_mod_of
from .memory import frozen_heap, peak_memory_bytes
from .timing import repeat_times

BIAS_BACKENDS = ("eager", "sdpa", "flex")
Builder = Callable[[int, bool], Callable[..., Tensor]]  # (seq_len, causal) -> fn(q, k, v) or fn(x)


@dataclass(frozen=True)
class AttentionCase:
    """One timed attention path: how to build its callable, and its exact reference if any."""

    name: str
    family: str  # exact | efficient | bias
    build: Builder
    mixes_input: bool = False
    compiled_forward_only_on_cpu: bool = False
    reference: str | None = None  # name of the case it must agree with (exact cases only)


def _module_case(spec: AttentionSpec, heads: int, head_dim: int, device: str) -> AttentionCase:
    cls = spec.cls

    def build(t: int, causal: bool) -> Callable[..., Tensor]:
        m = build_attention(spec, AttnDims(heads, head_dim, t, causal)).to(device)
        return m.mix if m.mixes_input else (lambda q, k, v: m(q, k, v, causal=causal))

    def compiled_flex(t: int, causal: bool) -> Callable[..., Tensor]:
        # timed as its compiled kernel: the module runs the materialized reference on CPU when gradients flow
        return lambda q, k, v: flex_attention_backend(q, k, v, causal=causal, compiled=True)

    flex = cls.uses_score_mod
    return AttentionCase(spec.name, "exact" if cls.exact else "efficient", compiled_flex if flex else build,
                         mixes_input=cls.mixes_input, compiled_forward_only_on_cpu=flex,
                         reference="eager" if cls.exact and spec.name != "eager" else None)


def _bias_case(backend: str, heads: int, head_dim: int, device: str) -> AttentionCase:
    def build(t: int, causal: bool) -> Callable[..., Tensor]:
        pe = build_encoding("alibi", PEDims(heads * head_dim, heads, head_dim, causal)).to(device)
        pos = torch.arange(t, device=device)
        if backend == "flex":
            mod = score_mod_of(pe, pos, pos)
            return lambda q, k, v: flex_attention_backend(q, k, v, causal=causal, score_mod=mod, compiled=True)
        attn = build_attention(backend, AttnDims(heads, head_dim, t, causal)).to(device)
        return lambda q, k, v: attn(q, k, v, bias=pe.bias(pos, pos), causal=causal)  # bias built per call

    return AttentionCase(f"alibi/{backend}", "bias", build, compiled_forward_only_on_cpu=backend == "flex",
                         reference=None if backend == "eager" else "alibi/eager")


def attention_cases(variants: Sequence[AttentionSpec | str | dict], bias_backends: Sequence[str], heads: int,
                    head_dim: int, device: str) -> dict[str, AttentionCase]:
    """The timed cases: each attention path of `variants`, then ALiBi-biased attention per backend."""
    cases = {}
    for v in variants:
        spec = AttentionSpec.model_validate(v)
        cases[spec.name] = _module_case(spec, heads, head_dim, device)
    for b in bias_backends:
        if b not in BIAS_BACKENDS:
            raise ConfigError(f"bias_backends = {b!r}: unknown; valid choices: {', '.join(BIAS_BACKENDS)}")
        cases[f"alibi/{b}"] = _bias_case(b, heads, head_dim, device)
    return cases


def _check_references(cases: dict[str, AttentionCase], t0: int, heads: int, head_dim: int, causal: bool,
                      device: str) -> dict[str, float]:
    """Max |difference| of each exact case from its reference, at a small length (correctness first)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, heads, t0, head_dim, generator=g).to(device) for _ in range(3))
    checked: dict[str, float] = {}
    for n, c in cases.items():
        if c.reference:
            ref_case = cases.get(c.reference) or attention_cases([c.reference], [], heads, head_dim, device)[
                c.reference]
            with torch.no_grad():
                ref, out = ref_case.build(t0, causal)(q, k, v), c.build(t0, causal)(q, k, v)
            checked[n] = float((out.float() - ref.float()).abs().max())
    return checked


def bench_attention(variants: Sequence[AttentionSpec | str | dict] | None = None,
                    lengths: tuple[int, ...] = (256, 512, 1024, 2048), batch: int = 4, heads: int = 4,
                    head_dim: int = 32, causal: bool = False, modes: tuple[str, ...] = ("fwd", "fwd+bwd"),
                    repeats: int = 5, warmup: int = 2, device: str | None = None, memory: bool = True,
                    progress: bool = True, bias_backends: Sequence[str] = BIAS_BACKENDS) -> pd.DataFrame:
    """Time (median) and peak memory per variant, length and mode; one failing cell never stops the sweep."""
    from tqdm.auto import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cases = attention_cases(variants if variants is not None else ATTENTION.names(), bias_backends, heads,
                            head_dim, device)
    checked = _check_references(cases, min(128, min(lengths)), heads, head_dim, causal, device)
    grid = [(n, t, m) for t in lengths for n in cases for m in modes]
    with frozen_heap():
        rows = [_cell(cases[n], n, t, mode, checked, batch, heads, head_dim, causal, repeats, warmup, device, memory)
                for n, t, mode in tqdm(grid, desc="bench attention", disable=not progress, leave=False)]
    return pd.DataFrame(rows)


def _cell(c: AttentionCase, n: str, t: int, mode: str, checked: dict[str, float], batch: int, heads: int,
          head_dim: int, causal: bool, repeats: int, warmup: int, device: str, memory: bool) -> dict[str, object]:
    """One row of the sweep: a variant at one length and mode, measured, or why not."""
    row: dict[str, object] = {"variant": n, "family": c.family, "length": t, "mode": mode, "causal": causal,
                              "max_abs_diff_vs_reference": checked.get(n, float("nan")),
                              "time_s": float("nan"), "peak_bytes": float("nan"), "status": "ok", "error": ""}
    if n in checked and checked[n] > 1e-3:
        return row | {"status": "error", "error": f"disagrees with {c.reference}: max |diff| {checked[n]:.2e}"}
    if mode == "fwd+bwd" and c.compiled_forward_only_on_cpu and device == "cpu":
        return row | {"status": "unsupported", "error": "compiled FlexAttention has no backward on CPU"}
    try:
        row.update(_measure(c, t, batch, heads, head_dim, causal, mode, repeats, warmup, device, memory))
    except torch.cuda.OutOfMemoryError as e:  # type: ignore[attr-defined]
        row.update(status="oom", error=str(e).splitlines()[0])
        torch.cuda.empty_cache()
    except (RuntimeError, MemoryError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        row.update(status="oom" if "memory" in msg.lower() else "error", error=msg[:200])
    return row


def _measure(c: AttentionCase, t: int, batch: int, heads: int, head_dim: int, causal: bool, mode: str,
             repeats: int, warmup: int, device: str, memory: bool) -> dict[str, float]:
    fn = c.build(t, causal)
    gen = torch.Generator().manual_seed(t)
    if c.mixes_input:
        inputs = [torch.randn(batch, t, heads * head_dim, generator=gen).to(device)]
    else:
        inputs = [torch.randn(batch, heads, t, head_dim, generator=gen).to(device) for _ in range(3)]
    if mode == "fwd+bwd":
        for x in inputs:
            x.requires_grad_(True)

        def run() -> None:
            fn(*inputs).float().sum().backward()
    else:
        def run() -> None:
            with torch.no_grad():
                fn(*inputs)
    times = repeat_times(run, repeats, warmup, device)
    out: dict[str, object] = {"time_s": statistics.median(times), "times": times}
    if memory:
        out["peak_bytes"] = peak_memory_bytes(run, device)
    if device == "cuda" and c.family in ("exact", "bias"):
        flops = 4 * batch * t * t * heads * head_dim * (0.5 if causal else 1.0)
        out["tflops"] = flops * (3.5 if mode == "fwd+bwd" else 1.0) / out["time_s"] / 1e12
    return out


def scaling_exponents(df: pd.DataFrame, min_points: int = 2) -> pd.DataFrame:
    """Least-squares slope of log(time) and log(memory) against log(length), per variant and mode,
    over the upper half of the lengths measured (where the asymptotic term dominates)."""
    rows = []
    for (variant, mode), g in df[df["status"] == "ok"].groupby(["variant", "mode"], sort=False):
        g = g.sort_values("length")
        g = g.iloc[len(g) // 2 - (1 if len(g) % 2 == 0 and len(g) > 2 else 0):] if len(g) > 2 else g
        out = {"variant": variant, "mode": mode, "points": len(g)}
        for col, name in (("time_s", "time_exponent"), ("peak_bytes", "memory_exponent")):
            ok = g[col].astype(float) > 0
            if ok.sum() >= min_points:
                out[name] = float(np.polyfit(np.log(g["length"][ok].astype(float)),
                                             np.log(g[col][ok].astype(float)), 1)[0])
            else:
                out[name] = float("nan")
        rows.append(out)
    return pd.DataFrame(rows)


def crossover_lengths(df: pd.DataFrame, baseline: str = "sdpa", mode: str = "fwd") -> pd.DataFrame:
    """Smallest measured length at which each variant is faster than `baseline` (NaN: never)."""
    d = df[(df["mode"] == mode) & (df["status"] == "ok")]
    base = d[d["variant"] == baseline].set_index("length")["time_s"]
    rows = []
    for variant, g in d.groupby("variant", sort=False):
        if variant == baseline:
            continue
        t = g.set_index("length")["time_s"]
        faster = [L for L in sorted(t.index) if L in base.index and t[L] < base[L]]
        rows.append({"variant": variant, "baseline": baseline, "mode": mode,
                     "crossover_length": faster[0] if faster else float("nan")})
    return pd.DataFrame(rows)
