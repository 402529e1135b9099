"""Peak memory of one call: the CUDA allocator's peak, or the resident-set high-water mark on Linux CPUs."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


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


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Within the block, the objects alive at its start are left out of garbage collection (gc.freeze), so the
    collection before each measurement scans only what the sweep made since: a full collection of a heap
    holding torch, dynamo and a notebook's state takes about 0.3 s, more than a small measurement itself."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def peak_memory_bytes(fn: Callable[[], object], device: str) -> float:
    """Peak memory added by fn(): CUDA allocator peak, or on Linux CPUs the resident-set high-water mark
    (reset through /proc/self/clear_refs). NaN where neither is available."""
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
