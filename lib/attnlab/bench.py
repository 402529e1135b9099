"""Benchmarks (not timed tests): warm-up, interleaved rounds, medians, correctness first.

``attnlab bench train`` -- training tokens/s of attnlab's model against a same-size
``transformers`` LlamaForCausalLM (RoPE, same batch, same threads) as a ratio; model FLOPs
utilization (PaLM's 6N + 12*L*d*T FLOPs per token) against this machine's measured matmul
peak; and the per-step cost of bias encodings (ALiBi, T5) relative to no encoding.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, PEConfig
from .io import atomic_write_json
from .model import build_model

SIZES = {
    "smoke": ModelConfig(d_model=64, n_layers=2, n_heads=2, d_ff=256),
    "cpu": ModelConfig(d_model=128, n_layers=4, n_heads=4, d_ff=512),
    "gpu": ModelConfig(d_model=512, n_layers=8, n_heads=8, d_ff=2048),
}


def matmul_peak_flops(n: int = 1024, repeats: int = 20, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Measured dense matmul throughput (FLOP/s): median of `repeats` n x n x n products."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 3):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        (a @ b).sum().item()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


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


def _step_timer(c: Contender, x: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
    opt = torch.optim.AdamW(c.model.parameters(), lr=1e-4)
    c.model.train()

    def step() -> float:
        t = time.perf_counter()
        loss = c.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t

    return step


def bench_train(size: str = "cpu", batch: int = 32, seq: int = 128, rounds: int = 6, steps_per_round: int = 5,
                warmup: int = 3, device: str | None = None) -> dict[str, object]:
    """Interleaved rounds of training steps for each contender; medians and ratios from one run."""
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
    # correctness first: both RoPE implementations produce finite, comparable initial losses
    with torch.no_grad():
        init = {c.name: float(c.loss(x, y)) for c in contenders}
    bad = [n for n, v in init.items() if not (v == v) or abs(v - 5.545) > 1.0]
    if bad:
        raise RuntimeError(f"sanity check failed before timing: initial losses {init}")
    timers = {c.name: _step_timer(c, x, y) for c in contenders}
    for t in timers.values():
        for _ in range(warmup):
            t()
    times: dict[str, list[float]] = {n: [] for n in timers}
    for _ in range(rounds):
        for n, t in timers.items():
            times[n] += [t() for _ in range(steps_per_round)]
    med = {n: statistics.median(v) for n, v in times.items()}
    tok = batch * seq
    peak = matmul_peak_flops(device=device)
    ours = contenders[0].model
    fpt = train_flops_per_token(matmul_params(ours), cfg.n_layers, cfg.d_model, seq)
    rows = {n: {"median_step_s": med[n], "tokens_per_s": tok / med[n],
                "params": sum(p.numel() for p in c.model.parameters())} for n, c in zip(timers, contenders)}
    return {
        "size": size, "device": device, "threads": torch.get_num_threads(), "batch": batch, "seq_len": seq,
        "rounds": rounds, "steps_per_round": steps_per_round, "initial_losses": init, "contenders": rows,
        "ratio_attnlab_rope_vs_llama": med["transformers/llama"] / med["attnlab/rope"],
        "matmul_peak_gflops": peak / 1e9,
        "model_flops_per_token": fpt,
        "mfu_attnlab_rope": fpt * tok / med["attnlab/rope"] / peak,
        "alibi_vs_none_step_ratio": med["attnlab/alibi"] / med["attnlab/none"],
        "t5_vs_none_step_ratio": med["attnlab/t5"] / med["attnlab/none"],
        "targets": {"ratio_vs_llama": ">= 1.0", "mfu_cpu": ">= 0.5", "bias_vs_none": "<= 1.3"},
    }


def format_train(r: dict[str, object]) -> str:
    lines = [f"bench train: size {r['size']}, {r['device']}, {r['threads']} threads, batch {r['batch']} x "
             f"{r['seq_len']}, {r['rounds']} rounds x {r['steps_per_round']} steps (medians)"]
    for n, v in r["contenders"].items():  # type: ignore[union-attr]
        lines.append(f"  {n:22s} {v['median_step_s'] * 1e3:8.1f} ms/step {v['tokens_per_s']:10.0f} tok/s "
                     f"{v['params'] / 1e6:6.2f}M params")
    lines += [
        f"  attnlab/rope vs transformers/llama, tokens/s ratio: {r['ratio_attnlab_rope_vs_llama']:.2f} (target >= 1.0)",
        f"  matmul peak {r['matmul_peak_gflops']:.1f} GFLOP/s; model FLOPs/token {r['model_flops_per_token'] / 1e6:.2f}M; "
        f"MFU {100 * r['mfu_attnlab_rope']:.1f}% (target >= 50% on CPU)",
        f"  step time ALiBi / none: {r['alibi_vs_none_step_ratio']:.2f}, T5 / none: {r['t5_vs_none_step_ratio']:.2f} "
        f"(target <= 1.3)",
    ]
    return "\n".join(lines)


def main(what: str, argv: list[str]) -> int:
    """`attnlab bench train|attention [options]`."""
    from .errors import ConfigError

    benches = {"train": (bench_train, format_train)}
    if what not in benches:
        raise ConfigError(f"bench = {what!r}: unknown; valid choices: {', '.join(benches)}")
    ap = argparse.ArgumentParser(prog=f"attnlab bench {what}")
    ap.add_argument("--size", default="cpu", help=f"model size: {', '.join(SIZES)}")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps-per-round", type=int, default=5)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = ap.parse_args(argv)
    if a.size not in SIZES:
        raise ConfigError(f"--size = {a.size!r}: unknown; valid choices: {', '.join(SIZES)}")
    for k in ("batch", "seq", "rounds", "steps_per_round"):
        if getattr(a, k) < 1:
            raise ConfigError(f"--{k.replace('_', '-')} = {getattr(a, k)}: must be >= 1")
    fn, fmt = benches[what]
    r = fn(size=a.size, batch=a.batch, seq=a.seq, rounds=a.rounds, steps_per_round=a.steps_per_round)
    print(fmt(r))
    if a.json:
        atomic_write_json(a.json, r)
    return 0


__all__ = ["bench_train", "matmul_peak_flops", "train_flops_per_token", "llama_like", "main"]
