"""``attnlab bench train`` and ``attnlab bench ablate``: what a training step costs.

train -- tokens/s of attnlab's model against a same-size ``transformers`` LlamaForCausalLM
(RoPE, same batch, same threads, the same trainer step) as a ratio; model FLOPs utilization
(PaLM's 6N + 12*L*d*T FLOPs per token) against this machine's matmul peak timed in the same
rounds; the step of bias encodings (ALiBi, T5) relative to no encoding.
ablate -- the in-situ cost of each part of a step, by leaving it out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import Attention
from ..model import ModelConfig, build_model
from ..train import TrainConfig, TrainStep, make_optimizer
from .timing import interleaved_medians, interleaved_times, matmul_timer, medians

SIZES = {
    "smoke": ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=256),
    "cpu": ModelConfig(d_model=128, n_layers=4, n_heads=4, d_ff=512),
    "gpu": ModelConfig(d_model=512, n_layers=8, n_heads=8, d_ff=2048),
}
# the ratios bench train reports, {key: (numerator, denominator)} of median step times
STEP_RATIOS = {"ratio_attnlab_rope_vs_llama": ("transformers/llama", "attnlab/rope"),
               "alibi_vs_none_step_ratio": ("attnlab/alibi", "attnlab/none"),
               "t5_vs_none_step_ratio": ("attnlab/t5", "attnlab/none")}
PEAK, PEAK_N = "matmul peak", 2048  # the dense product timed beside the steps (1024^3 reads ~6% lower)
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")
ATTENTION_OPS = ("scaled_dot_product", "flash_attention")


def train_flops_per_token(n_matmul_params: int, n_layers: int, d_model: int, seq_len: int) -> float:
    """PaLM (Chowdhery et al. 2022, App. B): 6N + 12 * L * d * T FLOPs per trained token."""
    return 6 * n_matmul_params + 12 * n_layers * d_model * seq_len


def matmul_params(model: nn.Module) -> int:
    """Parameters that enter matmuls (Linear weights, incl. a tied LM head once)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


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


def train_step_timer(model: nn.Module, loss: Callable[..., Tensor], x: Tensor, y: Tensor,
                     compile: bool = False, fused_adamw: bool = False) -> Callable[[], float]:
    """Seconds of one training step of `model` on (x, y): the trainer's own step (AdamW groups, clipping,
    compile), so a benchmark times what the notebooks run. Compiled, its graphs (forward, backward,
    update) are built here, before any timing. `fused_adamw`: torch's fused AdamW kernel."""
    tc = TrainConfig(compile=compile)
    opt = make_optimizer(model, tc, fused=fused_adamw)
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


def step_breakdown(step: Callable[[], float], steps: int = 3) -> dict[str, float]:
    """Share of a training step's operator time (self time of aten ops) in matmuls, in attention kernels and
    in everything else (norms, activations, rotary, optimizer, copies)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
    parts = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for e in prof.key_averages():
        if not (e.key.startswith("aten::") or "CompiledFxGraph" in e.key):
            continue  # python-level ranges and autograd wrappers (their ops are counted themselves)
        t = e.self_device_time_total if torch.cuda.is_available() else e.self_cpu_time_total
        kind = ("matmul" if e.key in MATMUL_OPS else
                "attention" if any(s in e.key for s in ATTENTION_OPS) else "other")
        parts[kind] += t / 1e6 / steps
    total = sum(parts.values()) or float("nan")
    return {**{f"{k}_s_per_step": v for k, v in parts.items()}, **{f"{k}_share": v / total for k, v in parts.items()}}


@dataclass
class Contender:
    name: str
    model: nn.Module
    loss: Callable[[Tensor, Tensor], Tensor]


def _batch(cfg: ModelConfig, batch: int, seq: int, device: str) -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    return (torch.randint(0, cfg.vocab_size, (batch, seq), device=device),
            torch.randint(0, cfg.vocab_size, (batch, seq), device=device))


def bench_train(size: str = "cpu", batch: int = 32, seq: int = 128, rounds: int = 6, steps_per_round: int = 5,
                warmup: int = 3, device: str | None = None, compile: bool = False,
                breakdown: bool = True) -> dict[str, object]:
    """Interleaved rounds of training steps for each contender; medians and ratios from one run.
    Every contender runs the trainer's own step (``train.TrainStep``: AdamW groups, clipping); `compile`
    compiles every contender's loss and update (attnlab's and transformers') alike."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = SIZES[size]
    x, y = _batch(cfg, batch, seq, device)
    contenders = []
    for pe in ("rope", "none", "alibi", "t5"):
        m = build_model(cfg, pe).to(device)
        contenders.append(Contender(f"attnlab/{pe}", m, lambda a, b, m=m: m.loss(a, b)))
    hf = llama_like(cfg).to(device)

    def hf_loss(a: Tensor, b: Tensor) -> Tensor:
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
    times = interleaved_times(timers, rounds, steps_per_round, warmup)
    med = medians(times)
    ratios = {key: med[num] / med[den] for key, (num, den) in STEP_RATIOS.items()}
    tok = batch * seq
    peak = 2 * PEAK_N**3 / med.pop(PEAK)
    ours_model = contenders[0].model
    fpt = train_flops_per_token(matmul_params(ours_model), cfg.n_layers, cfg.d_model, seq)
    parts = step_breakdown(timers["attnlab/rope"]) if breakdown else {}
    if parts:  # what the matmuls achieve: 6N FLOPs per token of their parameters in the time of their kernels
        parts["matmul_gflops"] = 6 * matmul_params(ours_model) * tok / parts["matmul_s_per_step"] / 1e9
    rows = {c.name: {"median_step_s": med[c.name], "tokens_per_s": tok / med[c.name],
                     "params": sum(p.numel() for p in c.model.parameters())} for c in contenders}
    return {
        "size": size, "device": device, "threads": torch.get_num_threads(), "batch": batch, "seq_len": seq,
        "compiled": compile, "breakdown_attnlab_rope": parts,
        "rounds": rounds, "steps_per_round": steps_per_round, "initial_losses": init, "contenders": rows,
        **ratios, "intervals": step_ratio_intervals(times, STEP_RATIOS),  # 95% bootstrap over the rounds
        "matmul_peak_gflops": peak / 1e9, "matmul_peak_n": PEAK_N,
        "model_flops_per_token": fpt,
        "mfu_attnlab_rope": fpt * tok / med["attnlab/rope"] / peak,
        "targets": {"ratio_vs_llama_eager": ">= 1.1", "ratio_vs_llama_compiled": ">= 1.0", "bias_vs_none": "<= 1.1"},
    }


def step_ratio_intervals(times: dict[str, list[list[float]]], ratios: dict[str, tuple[str, str]]
                         ) -> dict[str, list[float]]:
    """95% intervals of ratios of median step times, {name: (numerator, denominator)}: a bootstrap over the
    interleaved rounds, the same rounds for both sides of a ratio (they shared the machine's drift)."""
    from ..stats import crossed_bootstrap

    names = sorted({n for pair in ratios.values() for n in pair})
    data = np.array([[times[n][r] for n in names] for r in range(len(times[names[0]]))])  # (rounds, C, steps)
    out = {}
    for key, (num, den) in ratios.items():
        i, j = names.index(num), names.index(den)
        est = crossed_bootstrap(data[None], lambda d, i=i, j=j: float(np.median(d[..., i, :]) /
                                                                      np.median(d[..., j, :])))
        out[key] = [est.low, est.high]
    return out


def _with_interval(r: dict[str, object], key: str) -> str:
    lo, hi = r["intervals"][key]  # type: ignore[index]
    return f"{r[key]:.2f} [{lo:.2f}, {hi:.2f}]"


def format_train(r: dict[str, object]) -> str:
    """The terminal summary of `bench_train`."""
    target = "1.0" if r["compiled"] else "1.1"
    lines = [f"bench train: size {r['size']}, {r['device']}, {r['threads']} threads, batch {r['batch']} x "
             f"{r['seq_len']}, {r['rounds']} rounds x {r['steps_per_round']} steps (medians)"
             f"{', torch.compile' if r['compiled'] else ', eager'}"]
    for n, v in r["contenders"].items():  # type: ignore[union-attr]
        lines.append(f"  {n:22s} {v['median_step_s'] * 1e3:8.1f} ms/step {v['tokens_per_s']:10.0f} tok/s "
                     f"{v['params'] / 1e6:6.2f}M params")
    lines += [
        f"  attnlab/rope vs transformers/llama, tokens/s ratio: {_with_interval(r, 'ratio_attnlab_rope_vs_llama')} "
        f"(target >= {target}; 95% interval over the rounds)",
        f"  matmul peak {r['matmul_peak_gflops']:.1f} GFLOP/s ({r['matmul_peak_n']}^3 product, timed in the same "
        f"rounds); model FLOPs/token {r['model_flops_per_token'] / 1e6:.2f}M; MFU {100 * r['mfu_attnlab_rope']:.1f}%",
        f"  step time ALiBi / none: {_with_interval(r, 'alibi_vs_none_step_ratio')}, "
        f"T5 / none: {_with_interval(r, 't5_vs_none_step_ratio')} (target <= 1.1)",
    ]
    b = r.get("breakdown_attnlab_rope") or {}
    if b:
        lines.append(f"  attnlab/rope operator time: matmul {100 * b['matmul_share']:.0f}% "
                     f"({b['matmul_gflops']:.0f} GFLOP/s), attention kernels {100 * b['attention_share']:.0f}%, "
                     f"other ops (norms, activations, rotary, optimizer, copies) {100 * b['other_share']:.0f}%")
    return "\n".join(lines)


class _PassV(Attention):
    """The attention kernel left out: q, k and v are still computed, v passes through."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, **_: object) -> Tensor:
        return v  # (B, H, T, D)


def _without_attention_kernel(m: nn.Module) -> None:
    for b in m.blocks:  # type: ignore[union-attr]
        b.attn.attn = _PassV(b.attn.attn.params, b.attn.attn.dims)


def _real_rotation(m: nn.Module) -> None:
    """q and k rotated in real arithmetic in eager code too, instead of the eager default's complex product
    (compiled, both are the real form: the row then reads zero within noise)."""
    from dataclasses import replace
    from types import MethodType

    from ..positional.base import rotate_real

    plain = type(m.blocks[0].attn).project  # type: ignore[index]

    def project(self: nn.Module, x: Tensor, ctx: Any) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = plain(self, x, replace(ctx, rotation=None))  # the model's own projection, unrotated
        return rotate_real(q, *ctx.rotation.cos_sin("q")), rotate_real(k, *ctx.rotation.cos_sin("k")), v

    for blk in m.blocks:  # type: ignore[union-attr]
        blk.attn.project = MethodType(project, blk.attn)


def _without_feed_forward(m: nn.Module) -> None:
    for b in m.blocks:  # type: ignore[union-attr]
        b.mlp = nn.Identity()


@dataclass(frozen=True)
class Ablation:
    """A change of the RoPE model's training step: a part left out, or a trick swapped for its plain form."""

    pe: str = "rope"
    edit: Callable[[nn.Module], None] | None = None
    fused_adamw: bool = False  # the trainer's default AdamW, or torch's fused kernel


# a part's cost is minus its step's difference from the default step; a trick's saving is what the plain form adds
ABLATIONS: dict[str, Ablation] = {
    "without attention kernel": Ablation(edit=_without_attention_kernel),
    "without rotation": Ablation(pe="none"),
    "without feed-forward": Ablation(edit=_without_feed_forward),
    "rotation in real arithmetic": Ablation(edit=_real_rotation),  # the trick kept: eager's complex product
    "fused AdamW": Ablation(fused_adamw=True),  # a trick the trainer does not use (it saves < 5%)
}


def bench_ablation(size: str = "cpu", batch: int = 32, seq: int = 128, rounds: int = 12, steps_per_round: int = 4,
                   warmup: int = 3, compile: bool = False) -> dict[str, object]:
    """In-situ cost of each part of a training step, and what each trick saves: the RoPE model's default step
    against the same step with one change (ABLATIONS), interleaved; differences of medians, in seconds and
    as shares of the default step. Unlike a profiler's per-operator times, these include what a part costs
    the others (caches, memory traffic) and no instrumentation. `compile`: every step compiled alike."""
    cfg = SIZES[size]
    x, y = _batch(cfg, batch, seq, "cpu")
    torch.manual_seed(0)
    steps = {}
    for name, a in {"default": Ablation(), **ABLATIONS}.items():
        model = build_model(cfg, a.pe)
        if a.edit is not None:
            a.edit(model)
        steps[name] = train_step_timer(model, model.loss, x, y, compile=compile, fused_adamw=a.fused_adamw)
    med = interleaved_medians(steps, rounds, steps_per_round, warmup)
    base = med.pop("default")
    return {"size": size, "batch": batch, "seq_len": seq, "threads": torch.get_num_threads(), "compiled": compile,
            "rounds": rounds, "steps_per_round": steps_per_round, "default_step_s": base,
            "changes": {n: {"step_s": t, "delta_s": t - base, "share": (t - base) / base} for n, t in med.items()}}


def format_ablation(r: dict[str, object]) -> str:
    """The terminal summary of `bench_ablation`."""
    lines = [f"bench ablate: size {r['size']}, batch {r['batch']} x {r['seq_len']}, {r['threads']} threads, "
             f"{r['rounds']} rounds x {r['steps_per_round']} steps (medians), "
             f"{'torch.compile' if r['compiled'] else 'eager'}; default RoPE step "
             f"{r['default_step_s'] * 1e3:.1f} ms"]  # type: ignore[operator]
    for n, v in r["changes"].items():  # type: ignore[union-attr]
        lines.append(f"  {n:26s} {v['step_s'] * 1e3:7.1f} ms/step ({v['delta_s'] * 1e3:+6.1f} ms, "
                     f"{100 * v['share']:+5.1f}% vs the default step)")
    return "\n".join(lines)
