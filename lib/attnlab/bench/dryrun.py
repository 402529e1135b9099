"""Dry runs of a profile's models: each model a notebook would train, built at its real size on the
meta device (shapes only, no compute, no memory), one training step (forward, loss, backward) at its
training batch and one forward at its longest evaluation; training memory estimated against a GPU's.

Where an encoding reads data (a learned table's bound, randomized positions, dynamic NTK's length),
the meta device cannot run it: that model takes one real step on the CPU with one sequence and the
same shapes otherwise. The memory estimate is Korthikanti et al. (2022, eq. 1)'s activation count in
16-bit autocast -- 34 s b h bytes per layer, plus 5 a s^2 b when attention scores are materialized
(the `eager` backend) -- with 16 bytes per parameter (fp32 weights, gradients and AdamW's two
moments), the logits in fp32, and a bias encoding's (H, T, T) table and its gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..model import ModelConfig, build_model

GPU_BYTES = 80e9  # an 80 GB GPU (H100 / A100 80 GB)


@dataclass(frozen=True)
class Planned:
    """One model of a notebook at a profile: its config, encoding and the shapes it trains and evaluates at."""

    label: str
    model: ModelConfig
    pe: Any
    batch: int
    seq_len: int
    eval_batch: int = 0
    eval_len: int = 0


def training_bytes(cfg: ModelConfig, n_params: int, batch: int, seq_len: int, bias: bool) -> float:
    """Estimated peak memory of one training step (bytes); see the module docstring."""
    s, b, h, a = seq_len, batch, cfg.d_model, cfg.n_heads
    act = cfg.n_layers * (34 * s * b * h + (5 * a * s * s * b if str(cfg.attention.name) == "eager" else 0))
    logits = b * s * cfg.vocab_size * 4 * 3  # logits, their softmax and gradient in fp32
    table = 2 * a * s * s * 4 if bias else 0
    return 16.0 * n_params + act + logits + table


def dry_run(plan: Planned) -> dict[str, Any]:
    """Build `plan`'s model at full size on the meta device, take one training step and the evaluation
    forward; a model whose encoding reads data takes them on the CPU with batch 1. A row: parameters,
    estimated training memory, whether it fits GPU_BYTES, and how it ran."""
    mode = "meta"
    try:
        row = _step(plan, torch.device("meta"), plan.batch, plan.eval_batch)
    except (NotImplementedError, RuntimeError) as e:
        if "meta" not in str(e):
            raise
        mode = "cpu, batch 1"
        row = _step(plan, torch.device("cpu"), 1, 1 if plan.eval_batch else 0)
    bias = row.pop("bias")
    est = training_bytes(plan.model, row["params"], plan.batch, plan.seq_len, bias)
    return {"model": plan.label, "ran_on": mode, "batch": plan.batch, "seq_len": plan.seq_len,
            "eval_len": plan.eval_len, **row, "train_gb": est / 1e9, "fits_80gb": est <= GPU_BYTES}


def _step(plan: Planned, device: torch.device, batch: int, eval_batch: int) -> dict[str, Any]:
    with torch.device(device):
        model = build_model(plan.model, plan.pe)
        v = plan.model.vocab_size
        x = torch.randint(0, v, (batch, plan.seq_len))
        model.loss(x, x).backward()  # (B, T) -> scalar; every parameter gets a gradient
        grads = sum(p.grad is not None for p in model.parameters())
        if eval_batch and plan.eval_len:
            model.eval()
            with torch.no_grad():
                out = model(torch.randint(0, v, (eval_batch, plan.eval_len)))  # (B, T_eval, V)
            if tuple(out.shape) != (eval_batch, plan.eval_len, v):
                raise AssertionError(f"{plan.label}: logits {tuple(out.shape)}")
    return {"params": sum(p.numel() for p in model.parameters()), "params_with_grad": grads,
            "bias": model.pe.kind == "bias"}
