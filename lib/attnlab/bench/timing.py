"""Timing: warm-up, repeats, medians; interleaved rounds so that contenders share the machine's drift."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def repeat_times(fn: Callable[[], object], repeats: int, warmup: int, device: str) -> list[float]:
    """Wall time of each of `repeats` calls of fn() after `warmup` calls."""
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def median_time(fn: Callable[[], object], repeats: int, warmup: int, device: str) -> float:
    """Median wall time of fn() over `repeats` calls after `warmup` calls."""
    return statistics.median(repeat_times(fn, repeats, warmup, device))


def interleaved_times(timers: dict[str, Callable[[], float]], rounds: int, steps_per_round: int,
                      warmup: int) -> dict[str, list[list[float]]]:
    """Seconds of every call of each timer, per interleaved round (every contender sees the same drift of
    the machine's speed), after `warmup` calls each: {name: [[s, ...] per round]}."""
    for t in timers.values():
        for _ in range(warmup):
            t()
    times: dict[str, list[list[float]]] = {n: [] for n in timers}
    for _ in range(rounds):
        for n, t in timers.items():
            times[n].append([t() for _ in range(steps_per_round)])
    return times


def interleaved_medians(timers: dict[str, Callable[[], float]], rounds: int, steps_per_round: int,
                        warmup: int) -> dict[str, float]:
    """Median seconds per call of each timer over interleaved rounds (`interleaved_times`)."""
    return medians(interleaved_times(timers, rounds, steps_per_round, warmup))


def medians(times: dict[str, list[list[float]]]) -> dict[str, float]:
    """Median of every call of each timer over its rounds ({name: [[s, ...] per round]})."""
    return {n: statistics.median([x for r in v for x in r]) for n, v in times.items()}


def matmul_timer(n: int = 2048, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Callable[[], float]:
    """Seconds of one dense n x n x n product into a preallocated output (no allocation, no reduction)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)

    def product() -> float:
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        _sync(device)
        return time.perf_counter() - t

    return product
