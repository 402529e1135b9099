"""Benchmarks (not timed tests): warm-up, interleaved rounds, medians, correctness first.

``attnlab bench train`` -- training tokens/s of attnlab's model against a same-size
``transformers`` LlamaForCausalLM (RoPE, same batch, same threads) as a ratio; model FLOPs
utilization (PaLM's 6N + 12*L*d*T FLOPs per token) against this machine's measured matmul
peak; and the per-step cost of bias encodings (ALiBi, T5) relative to no encoding.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, PEConfig, TrainConfig
from .feedforward import FeedForward
from .io import atomic_write_json
from .model import build_model
from .train import TrainStep, make_optimizer

SIZES = {
    "smoke": ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=256),
    "cpu": ModelConfig(d_model=128, n_layers=4, n_heads=4, d_ff=512),
    "gpu": ModelConfig(d_model=512, n_layers=8, n_heads=8, d_ff=2048),
}


def matmul_timer(n: int = 2048, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Callable[[], float]:
    """Seconds of one dense n x n x n product into a preallocated output (no allocation, no reduction)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)

    def product() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    return product


def train_flops_per_token(n_matmul_params: int, n_layers: int, d_model: int, seq_len: int) -> float:
    """PaLM (Chowdhery et al. 2022, App. B): 6N + 12 * L * d * T FLOPs per trained token."""
    return 6 * n_matmul_params + 12 * n_layers * d_model * seq_len


def matmul_params(model: nn.Module) -> int:
    """Parameters that enter matmuls (Linear weights, incl. a tied LM head once)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


@dataclass
class Contender:
    name: str
    model: nn.Module
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def llama_like(cfg: ModelConfig) -> nn.Module:
    """transformers' LlamaForCausalLM with the same width, depth, heads and parameter count."""
    from transformers import LlamaConfig, LlamaForCausalLM

    inter = int(round(2 * cfg.d_ff / 3 / 8) * 8)  # gated MLP: 3 matrices of d x inter ~ our 2 of d x d_ff
    hf = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=inter,
                     num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                     num_key_value_heads=cfg.n_heads, max_position_embeddings=4096, tie_word_embeddings=True,
                     attention_bias=False, mlp_bias=False)
    hf._attn_implementation = "sdpa"
    return LlamaForCausalLM(hf)


def train_step_timer(model: nn.Module, loss: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                     compile: bool = False) -> Callable[[], float]:
    """Seconds of one training step of `model` on (x, y): the trainer's own step (AdamW groups, clipping,
    compile), so a benchmark times what the notebooks run. Compiled, its graphs (forward, backward,
    update) are built here, before any timing."""
    tc = TrainConfig(compile=compile)
    opt = make_optimizer(model, tc)
    model.train()
    train_step = TrainStep(loss, [p for p in model.parameters() if p.requires_grad], opt, tc.grad_clip,
                           compile=tc.compile)

    def step() -> float:
        t = time.perf_counter()
        train_step(x, y, lr=1e-4)
        if x.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for _ in range(2 if compile else 0):
        step()
    return step


def interleaved_medians(timers: dict[str, Callable[[], float]], rounds: int, steps_per_round: int,
                        warmup: int) -> dict[str, float]:
    """Median seconds per call of each timer, measured in interleaved rounds (every contender sees the
    same drift of the machine's speed) after `warmup` calls each."""
    for t in timers.values():
        for _ in range(warmup):
            t()
    times: dict[str, list[float]] = {n: [] for n in timers}
    for _ in range(rounds):
        for n, t in timers.items():
            times[n] += [t() for _ in range(steps_per_round)]
    return {n: statistics.median(v) for n, v in times.items()}


PEAK, PEAK_N = "matmul peak", 2048  # the dense product timed beside the steps (1024^3 reads ~6% lower)
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")
ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "attnlab::small_attention")


def step_breakdown(step: Callable[[], float], steps: int = 3) -> dict[str, float]:
    """Share of a training step's operator time (self CPU/CUDA time of aten ops and attnlab's kernels) spent
    in matmuls, in attention kernels, in the compiled feed-forward kernel (its matmuls and activation), and
    in everything else (norms, activations, rotary, optimizer, copies)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
    parts = {"matmul": 0.0, "attention": 0.0, "feedforward": 0.0, "other": 0.0}
    for e in prof.key_averages():
        if not (e.key.startswith(("aten::", "attnlab")) or "CompiledFxGraph" in e.key):
            continue  # python-level ranges and autograd wrappers (their ops are counted themselves)
        t = e.self_device_time_total if torch.cuda.is_available() else e.self_cpu_time_total
        kind = ("matmul" if e.key in MATMUL_OPS else
                "attention" if any(s in e.key for s in ATTENTION_OPS) else
                "feedforward" if e.key.startswith("attnlab_mlp::") else "other")
        parts[kind] += t / 1e6 / steps
    total = sum(parts.values()) or float("nan")
    return {**{f"{k}_s_per_step": v for k, v in parts.items()}, **{f"{k}_share": v / total for k, v in parts.items()}}


def _feedforward_kernel_params(model: nn.Module, x: torch.Tensor) -> int:
    """Matmul parameters inside feed-forward blocks that run attnlab's compiled kernel on input like x."""
    return sum(m[0].weight.numel() + m[2].weight.numel() for m in model.modules()
               if isinstance(m, FeedForward) and m.fused_applies(x))


def bench_train(size: str = "cpu", batch: int = 32, seq: int = 128, rounds: int = 6, steps_per_round: int = 5,
                warmup: int = 3, device: str | None = None, compile: bool = False,
                breakdown: bool = True) -> dict[str, object]:
    """Interleaved rounds of training steps for each contender; medians and ratios from one run.
    Every contender runs the trainer's own step (``train.TrainStep``: AdamW groups, clipping); `compile`
    compiles every contender's loss and update (attnlab's and transformers') alike."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = SIZES[size]
    torch.manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    y = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    contenders = []
    for pe in ("rope", "none", "alibi", "t5"):
        m = build_model(cfg, PEConfig(name=pe)).to(device)
        contenders.append(Contender(f"attnlab/{pe}", m, lambda a, b, m=m: m.loss(a, b)))
    hf = llama_like(cfg).to(device)

    def hf_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        logits = hf(input_ids=a).logits
        return F.cross_entropy(logits.float().flatten(0, 1), b.flatten())

    contenders.append(Contender("transformers/llama", hf, hf_loss))
    # correctness first: every contender gives a finite loss, and attnlab's variants agree at initialization
    with torch.no_grad():
        init = {c.name: float(c.loss(x, y)) for c in contenders}
    ours = [v for n, v in init.items() if n.startswith("attnlab/")]
    if not all(v == v and abs(v) < 1e3 for v in init.values()) or max(ours) - min(ours) > 1.0:
        raise RuntimeError(f"sanity check failed before timing: initial losses {init}")
    timers = {c.name: train_step_timer(c.model, c.loss, x, y, compile) for c in contenders}
    # the matmul peak is timed in the same interleaved rounds: MFU is a ratio of two rates of one run
    timers[PEAK] = matmul_timer(PEAK_N, device)
    med = interleaved_medians(timers, rounds, steps_per_round, warmup)
    tok = batch * seq
    peak = 2 * PEAK_N**3 / med.pop(PEAK)
    ours = contenders[0].model
    fpt = train_flops_per_token(matmul_params(ours), cfg.n_layers, cfg.d_model, seq)
    parts = step_breakdown(timers["attnlab/rope"]) if breakdown else {}
    if parts:  # what the matmuls achieve: 6N FLOPs per token of their parameters in the time of their kernels
        n_ff = _feedforward_kernel_params(ours, torch.empty(1, cfg.d_model, device=device))
        parts["matmul_gflops"] = 6 * (matmul_params(ours) - n_ff) * tok / parts["matmul_s_per_step"] / 1e9
        parts["feedforward_gflops"] = (6 * n_ff * tok / parts["feedforward_s_per_step"] / 1e9
                                       if parts["feedforward_s_per_step"] > 0 else None)
    rows = {c.name: {"median_step_s": med[c.name], "tokens_per_s": tok / med[c.name],
                     "params": sum(p.numel() for p in c.model.parameters())} for c in contenders}
    return {
        "size": size, "device": device, "threads": torch.get_num_threads(), "batch": batch, "seq_len": seq,
        "compiled": compile, "breakdown_attnlab_rope": parts,
        "rounds": rounds, "steps_per_round": steps_per_round, "initial_losses": init, "contenders": rows,
        "ratio_attnlab_rope_vs_llama": med["transformers/llama"] / med["attnlab/rope"],
        "matmul_peak_gflops": peak / 1e9, "matmul_peak_n": PEAK_N,
        "model_flops_per_token": fpt,
        "mfu_attnlab_rope": fpt * tok / med["attnlab/rope"] / peak,
        "alibi_vs_none_step_ratio": med["attnlab/alibi"] / med["attnlab/none"],
        "t5_vs_none_step_ratio": med["attnlab/t5"] / med["attnlab/none"],
        "targets": {"ratio_vs_llama": ">= 1.0", "mfu_cpu": ">= 0.5", "bias_vs_none": "<= 1.3"},
    }


def format_train(r: dict[str, object]) -> str:
    lines = [f"bench train: size {r['size']}, {r['device']}, {r['threads']} threads, batch {r['batch']} x "
             f"{r['seq_len']}, {r['rounds']} rounds x {r['steps_per_round']} steps (medians)"
             f"{', torch.compile' if r.get('compiled') else ', eager'}"]
    for n, v in r["contenders"].items():  # type: ignore[union-attr]
        lines.append(f"  {n:22s} {v['median_step_s'] * 1e3:8.1f} ms/step {v['tokens_per_s']:10.0f} tok/s "
                     f"{v['params'] / 1e6:6.2f}M params")
    lines += [
        f"  attnlab/rope vs transformers/llama, tokens/s ratio: {r['ratio_attnlab_rope_vs_llama']:.2f} (target >= 1.0)",
        f"  matmul peak {r['matmul_peak_gflops']:.1f} GFLOP/s (median {r.get('matmul_peak_n', 1024)}^3 product, "
        f"timed in the same rounds); model FLOPs/token {r['model_flops_per_token'] / 1e6:.2f}M; "
        f"MFU {100 * r['mfu_attnlab_rope']:.1f}% (target >= 50% on CPU)",
        f"  step time ALiBi / none: {r['alibi_vs_none_step_ratio']:.2f}, T5 / none: {r['t5_vs_none_step_ratio']:.2f} "
        f"(target <= 1.3)",
    ]
    b = r.get("breakdown_attnlab_rope") or {}
    if b:
        ff = (f"feed-forward kernel {100 * b['feedforward_share']:.0f}% ({b['feedforward_gflops']:.0f} GFLOP/s), "
              if b.get("feedforward_gflops") else "")
        lines.append(f"  attnlab/rope operator time: matmul {100 * b['matmul_share']:.0f}% "
                     f"({b['matmul_gflops']:.0f} GFLOP/s), {ff}attention kernels {100 * b['attention_share']:.0f}%, "
                     f"other ops (norms, activations, rotary, optimizer, copies) {100 * b['other_share']:.0f}%")
    return "\n".join(lines)


def _pass_v(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: object) -> torch.Tensor:
    return v  # (B, H, T, D): the attention kernel left out, q, k and v still computed


def _without_attention_kernel(m: nn.Module) -> None:
    for b in m.blocks:  # type: ignore[union-attr]
        b.attn.fused, b.attn.backend = False, _pass_v


def _without_feed_forward(m: nn.Module) -> None:
    for b in m.blocks:  # type: ignore[union-attr]
        b.mlp = nn.Identity()


def _with_pytorch_kernels(m: nn.Module) -> None:
    for b in m.blocks:  # type: ignore[union-attr]
        b.attn.fused, b.mlp.fused = False, False


# what each ablation leaves out of the RoPE model: (encoding, edit of the built model); "attnlab kernels"
# runs PyTorch's operators instead of attnlab's compiled kernels (a negative cost: what they save)
ABLATIONS: dict[str, tuple[str, Callable[[nn.Module], None] | None]] = {
    "attention kernel": ("rope", _without_attention_kernel),
    "rotation": ("none", None),
    "feed-forward": ("rope", _without_feed_forward),
    "attnlab kernels": ("rope", _with_pytorch_kernels),
}


def bench_ablation(size: str = "cpu", batch: int = 32, seq: int = 128, rounds: int = 12, steps_per_round: int = 4,
                   warmup: int = 3) -> dict[str, object]:
    """In-situ cost of each part of a training step: the RoPE model's step against the same step with one
    part left out (ABLATIONS), interleaved; the differences of medians, in seconds and as shares of the
    step. Unlike a profiler's per-operator times, these include what a part costs the others (caches,
    memory traffic) and no instrumentation."""
    cfg = SIZES[size]
    torch.manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (batch, seq))
    y = torch.randint(0, cfg.vocab_size, (batch, seq))
    models = {"full": build_model(cfg, PEConfig(name="rope"))}
    for name, (pe, edit) in ABLATIONS.items():
        models[name] = build_model(cfg, PEConfig(name=pe))
        if edit is not None:
            edit(models[name])
    timers = {n: train_step_timer(m, lambda a, b, m=m: m.loss(a, b), x, y) for n, m in models.items()}
    med = interleaved_medians(timers, rounds, steps_per_round, warmup)
    full = med.pop("full")
    return {"size": size, "batch": batch, "seq_len": seq, "threads": torch.get_num_threads(), "rounds": rounds,
            "steps_per_round": steps_per_round, "full_step_s": full,
            "parts": {n: {"step_without_s": t, "cost_s": full - t, "share": (full - t) / full} for n, t in med.items()}}


def format_ablation(r: dict[str, object]) -> str:
    lines = [f"bench ablate: size {r['size']}, batch {r['batch']} x {r['seq_len']}, {r['threads']} threads, "
             f"{r['rounds']} rounds x {r['steps_per_round']} steps (medians); RoPE step "
             f"{r['full_step_s'] * 1e3:.1f} ms"]  # type: ignore[operator]
    for n, v in r["parts"].items():  # type: ignore[union-attr]
        lines.append(f"  {n:18s} step without it {v['step_without_s'] * 1e3:7.1f} ms -> costs "
                     f"{v['cost_s'] * 1e3:6.1f} ms ({100 * v['share']:4.1f}% of the step)")
    return "\n".join(lines)


def _step_args(prog: str, rounds: int, steps_per_round: int) -> argparse.ArgumentParser:
    """Options of the benchmarks that time training steps of a profile's model size."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--size", default="cpu", help=f"model size: {', '.join(SIZES)}")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--steps-per-round", type=int, default=steps_per_round)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return ap


def _parse_step_args(ap: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    a = ap.parse_args(argv)
    _check_sizes(a, ("batch", "seq", "rounds", "steps_per_round"))
    _check_size_name(a.size)
    return a


def _ablate_cli(argv: list[str]) -> tuple[str, dict[str, object]]:
    a = _parse_step_args(_step_args("attnlab bench ablate", rounds=12, steps_per_round=4), argv)
    r = bench_ablation(a.size, a.batch, a.seq, a.rounds, a.steps_per_round)
    return format_ablation(r), {"json": a.json, "data": r}


def _train_cli(argv: list[str]) -> tuple[str, dict[str, object]]:
    ap = _step_args("attnlab bench train", rounds=6, steps_per_round=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile every contender's loss and update alike")
    a = _parse_step_args(ap, argv)
    r = bench_train(size=a.size, batch=a.batch, seq=a.seq, rounds=a.rounds, steps_per_round=a.steps_per_round,
                    compile=a.compile)
    return format_train(r), {"json": a.json, "data": r}


def _attention_cli(argv: list[str]) -> tuple[str, dict[str, object]]:
    ap = argparse.ArgumentParser(prog="attnlab bench attention")
    ap.add_argument("--variants", nargs="+", help="default: all (see notebook 04)")
    ap.add_argument("--lengths", nargs="+", type=int, default=[256, 512, 1024, 2048])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    a = ap.parse_args(argv)
    _check_sizes(a, ("batch", "heads", "head_dim", "repeats"))
    if any(n < 2 for n in a.lengths):
        from .errors import ConfigError

        raise ConfigError(f"--lengths = {a.lengths}: every length must be >= 2")
    df = bench_attention(a.variants, tuple(a.lengths), a.batch, a.heads, a.head_dim, a.causal, repeats=a.repeats)
    ex = scaling_exponents(df)
    table = df.pivot_table(index="variant", columns=["mode", "length"], values="time_s", sort=False) * 1e3
    text = (f"bench attention: B={a.batch}, H={a.heads}, D={a.head_dim}, causal={a.causal} (median ms)\n"
            f"{table.round(2).to_string()}\n\nscaling exponents\n{ex.round(2).to_string(index=False)}")
    bad = df[df["status"] != "ok"]
    if len(bad):
        text += "\n\nnot measured\n" + bad[["variant", "length", "mode", "status", "error"]].to_string(index=False)
    return text, {"json": a.json, "data": df.to_dict("records")}


def _check_size_name(size: str) -> None:
    from .errors import ConfigError

    if size not in SIZES:
        raise ConfigError(f"--size = {size!r}: unknown; valid choices: {', '.join(SIZES)}")


def _check_sizes(a: argparse.Namespace, names: tuple[str, ...]) -> None:
    from .errors import ConfigError

    for k in names:
        if getattr(a, k) < 1:
            raise ConfigError(f"--{k.replace('_', '-')} = {getattr(a, k)}: must be >= 1")


BENCHES = {"train": _train_cli, "ablate": _ablate_cli, "attention": _attention_cli}


def main(what: str, argv: list[str]) -> int:
    """`attnlab bench train|ablate|attention [options]`."""
    from .errors import ConfigError

    if what not in BENCHES:
        raise ConfigError(f"bench = {what!r}: unknown; valid choices: {', '.join(BENCHES)}")
    text, out = BENCHES[what](argv)
    print(text)
    if out["json"]:
        atomic_write_json(str(out["json"]), out["data"])
    return 0


__all__ = ["bench_train", "bench_ablation", "interleaved_medians", "train_step_timer", "matmul_timer", "train_flops_per_token", "llama_like", "main"]


# ----------------------------------------------------------------------------- attention


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


@functools.lru_cache(maxsize=1)
def _mmap_large_allocations() -> bool:
    """glibc: serve every allocation >= 64 KiB by mmap (and keep that threshold fixed), so freed tensors
    leave the resident set and the high-water mark sees each measurement's own allocations."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def peak_memory_bytes(fn: Callable[[], object], device: str) -> float:
    """Peak memory added by fn(): CUDA allocator peak, or on Linux CPUs the resident-set high-water mark
    (reset through /proc/self/clear_refs). NaN where neither is available."""
    import gc

    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - base)
    _mmap_large_allocations()
    try:
        base = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except (OSError, KeyError):
        return float("nan")
    fn()
    return float(max(0, _status_kb("VmHWM") - base) * 1024)


def median_time(fn: Callable[[], object], repeats: int, warmup: int, device: str) -> float:
    """Median wall time of fn() over `repeats` calls after `warmup` calls."""
    times = []
    for i in range(warmup + repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


@dataclass(frozen=True)
class AttentionCase:
    """One timed attention variant: how to build its callable, and its exact reference if any."""

    name: str
    family: str  # exact | efficient | bias
    build: Callable[[int, bool], Callable[..., torch.Tensor]]  # (seq_len, causal) -> fn(q, k, v) or fn(x)
    mixes_input: bool = False
    compiled_forward_only_on_cpu: bool = False
    reference: str | None = None  # name of the case it must agree with (exact cases only)


def attention_cases(heads: int, head_dim: int, device: str, variant_params: dict[str, float] | None = None
                    ) -> dict[str, AttentionCase]:
    """Exact backends, efficient variants, and ALiBi biased attention (materialized vs fused)."""
    from .attention import eager_attention, flex_attention_backend, sdpa_attention
    from .efficient import build_variant
    from .positional import ALiBi, PEDims

    params = {"window": 128, "k": 128, "features": 128, **(variant_params or {})}

    def exact(fn: Callable[..., torch.Tensor]) -> Callable[[int, bool], Callable[..., torch.Tensor]]:
        return lambda t, causal: (lambda q, k, v: fn(q, k, v, causal=causal))

    def efficient(name: str) -> Callable[[int, bool], Callable[..., torch.Tensor]]:
        def build(t: int, causal: bool) -> Callable[..., torch.Tensor]:
            m = build_variant(name, heads, head_dim, t, causal, **params).to(device)
            return m.mix if m.mixes_input else m
        return build

    def alibi(kind: str) -> Callable[[int, bool], Callable[..., torch.Tensor]]:
        def build(t: int, causal: bool) -> Callable[..., torch.Tensor]:
            pe = ALiBi(PEConfig(name="alibi"), PEDims(heads * head_dim, heads, head_dim, causal)).to(device)
            pos = torch.arange(t, device=device)
            if kind == "flex":
                mod = pe.score_mod(pos, pos)
                return lambda q, k, v: flex_attention_backend(q, k, v, causal=causal, score_mod=mod, compiled=True)
            fn = eager_attention if kind == "eager" else sdpa_attention
            return lambda q, k, v: fn(q, k, v, bias=pe.bias(pos, pos), causal=causal)  # bias built per call
        return build

    cases = [
        AttentionCase("eager", "exact", exact(eager_attention)),
        AttentionCase("sdpa", "exact", exact(sdpa_attention), reference="eager"),
        AttentionCase("flex", "exact", exact(lambda q, k, v, causal: flex_attention_backend(q, k, v, causal=causal,
                                                                                             compiled=True)),
                      compiled_forward_only_on_cpu=True, reference="eager"),
        AttentionCase("alibi/eager", "bias", alibi("eager")),
        AttentionCase("alibi/sdpa", "bias", alibi("sdpa"), reference="alibi/eager"),
        AttentionCase("alibi/flex", "bias", alibi("flex"), compiled_forward_only_on_cpu=True, reference="alibi/eager"),
    ]
    from .efficient import VARIANTS

    for name, cls in VARIANTS.items():
        cases.append(AttentionCase(name, "efficient", efficient(name), mixes_input=cls.mixes_input))
    return {c.name: c for c in cases}


def bench_attention(variants: list[str] | None = None, lengths: tuple[int, ...] = (256, 512, 1024, 2048),
                    batch: int = 4, heads: int = 4, head_dim: int = 32, causal: bool = False,
                    modes: tuple[str, ...] = ("fwd", "fwd+bwd"), repeats: int = 5, warmup: int = 2,
                    device: str | None = None, memory: bool = True, progress: bool = True,
                    variant_params: dict[str, float] | None = None) -> pd.DataFrame:
    """Time (median) and peak memory per variant, length and mode; one failing cell never stops the sweep."""
    from tqdm.auto import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cases = attention_cases(heads, head_dim, device, variant_params)
    names = variants or list(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        from .errors import ConfigError

        raise ConfigError(f"variants = {unknown[0]!r}: unknown; valid choices: {', '.join(cases)}")
    rows = []
    # correctness first, at a small length: exact cases against their references
    t0 = min(128, min(lengths))
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, heads, t0, head_dim, generator=g).to(device) for _ in range(3))
    checked: dict[str, float] = {}
    for n in names:
        c = cases[n]
        if c.reference:
            with torch.no_grad():
                ref = cases[c.reference].build(t0, causal)(q, k, v)
                out = c.build(t0, causal)(q, k, v)
            checked[n] = float((out.float() - ref.float()).abs().max())
    grid = [(n, t, m) for t in lengths for n in names for m in modes]
    for n, t, mode in tqdm(grid, desc="bench attention", disable=not progress, leave=False):
        c = cases[n]
        row: dict[str, object] = {"variant": n, "family": c.family, "length": t, "mode": mode, "causal": causal,
                                  "max_abs_diff_vs_reference": checked.get(n, float("nan")),
                                  "time_s": float("nan"), "peak_bytes": float("nan"), "status": "ok", "error": ""}
        if n in checked and checked[n] > 1e-3:
            row.update(status="error", error=f"disagrees with {c.reference}: max |diff| {checked[n]:.2e}")
            rows.append(row)
            continue
        if mode == "fwd+bwd" and c.compiled_forward_only_on_cpu and device == "cpu":
            row.update(status="unsupported", error="compiled FlexAttention has no backward on CPU")
            rows.append(row)
            continue
        try:
            fn = c.build(t, causal)
            gen = torch.Generator().manual_seed(t)
            if c.mixes_input:
                inputs = [torch.randn(batch, t, heads * head_dim, generator=gen).to(device)]
            else:
                inputs = [torch.randn(batch, heads, t, head_dim, generator=gen).to(device) for _ in range(3)]
            if mode == "fwd+bwd":
                for x in inputs:
                    x.requires_grad_(True)

                def run(fn=fn, inputs=inputs) -> None:  # noqa: ANN001
                    fn(*inputs).float().sum().backward()
            else:
                def run(fn=fn, inputs=inputs) -> None:  # noqa: ANN001
                    with torch.no_grad():
                        fn(*inputs)
            row["time_s"] = median_time(run, repeats, warmup, device)
            if memory:
                row["peak_bytes"] = peak_memory_bytes(run, device)
            if device == "cuda" and c.family in ("exact", "bias"):
                flops = 4 * batch * t * t * heads * head_dim * (0.5 if causal else 1.0)
                row["tflops"] = flops * (3.5 if mode == "fwd+bwd" else 1.0) / row["time_s"] / 1e12  # type: ignore[operator]
        except torch.cuda.OutOfMemoryError as e:  # type: ignore[attr-defined]
            row.update(status="oom", error=str(e).splitlines()[0])
            torch.cuda.empty_cache()
        except (RuntimeError, MemoryError, ValueError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            row.update(status="oom" if "memory" in msg.lower() else "error", error=msg[:200])
        rows.append(row)
    return pd.DataFrame(rows)


def scaling_exponents(df: pd.DataFrame, min_points: int = 2) -> pd.DataFrame:
    """Least-squares slope of log(time) and log(memory) against log(length), per variant and mode,
    over the upper half of the lengths measured (where the asymptotic term dominates)."""
    import numpy as np

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
