"""Ring self-attention's memory per rank against sequence length (Li et al. 2021, Fig. 5's axis).

Each setting runs in its own group of processes (gloo on CPUs, NCCL on GPUs); every rank measures the
peak memory that one forward and backward pass of its chunk adds, and its median time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..parallel import launch, ring_attention, world
from .memory import peak_memory_bytes


def _one_rank(length: int, batch: int, heads: int, head_dim: int, causal: bool, repeats: int) -> dict[str, Any]:
    w = world()
    device = w.device()
    n = length // w.size
    g = torch.Generator().manual_seed(w.rank)
    q, k, v = (torch.randn(batch, heads, n, head_dim, generator=g).to(device).requires_grad_() for _ in range(3))

    def step() -> None:
        ring_attention(q, k, v, causal=causal).sum().backward()

    step()  # warm-up
    peak = peak_memory_bytes(step, device.type)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"rank": w.rank, "peak_bytes": peak, "time_s": statistics.median(times)}


def bench_ring(lengths: Sequence[int] = (1024, 2048, 4096), worlds: Sequence[int] = (1, 2), batch: int = 1,
               heads: int = 4, head_dim: int = 32, causal: bool = True, repeats: int = 3) -> list[dict[str, Any]]:
    """Peak memory per rank (the largest rank's) and time of ring attention, forward + backward."""
    rows = []
    for t in lengths:
        for size in worlds:
            if t % size:
                raise ValueError(f"length {t} is not a multiple of {size} ranks")
            per_rank = launch(_one_rank, size, t, batch, heads, head_dim, causal, repeats)
            rows.append({"length": t, "ranks": size, "chunk": t // size,
                         "peak_mb_per_rank": max(r["peak_bytes"] for r in per_rank.values()) / 2**20,
                         "time_ms": max(r["time_s"] for r in per_rank.values()) * 1e3})
    return rows
