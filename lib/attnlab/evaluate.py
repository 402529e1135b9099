"""Evaluation by length: non-overlapping windows and sliding window (Press et al. 2022, sec. 4 / App. B).

Non-overlapping: windows of L tokens, every token scored with the context inside its window
(early tokens of a window see little context). Sliding window with stride S: windows of L
tokens of which only the last S are scored, so every scored token sees at least L - S tokens
of context (App. B's protocol, with S = 1 there). Both protocols score about `max_tokens`
tokens taken from windows spread evenly over the whole split (not only its beginning), so the
two protocols and all lengths see the same text distribution. Batches are sized by tokens, so
evaluation at 16L stays within memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LN2 = math.log(2.0)


@torch.no_grad()
def _score(model: nn.Module, windows: Tensor, score_from: int, batch: int, device: torch.device,
           logit_scale: float = 1.0) -> tuple[float, int]:
    """Sum of next-token NLL (nats) over positions >= score_from of each window (N, L+1)."""
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        w = windows[i: i + batch].to(device).long()
        x, y = w[:, :-1], w[:, 1:]
        logits = model(x, logit_scale=logit_scale) if logit_scale != 1.0 else model(x)
        ce = F.cross_entropy(logits[:, score_from:].float().flatten(0, 1), y[:, score_from:].flatten(),
                             reduction="sum")
        total += float(ce)
        count += y[:, score_from:].numel()
    return total, count


def _starts(n: int, length: int, count: int) -> Tensor:
    """`count` window starts spread evenly over a split of n tokens (windows of length + 1)."""
    last = n - length - 1
    if last < 0:
        raise ValueError(f"split of {n} tokens is shorter than one window of {length + 1}")
    return torch.linspace(0, last, count).round().long()


def _row(protocol: str, length: int, nll: float, n: int, **extra: object) -> dict[str, object]:
    loss = nll / max(n, 1)
    return {"protocol": protocol, "length": length, "loss": loss, "ppl": math.exp(min(loss, 50)),
            "bpb": loss / LN2, "tokens": n, **extra}


def nonoverlapping(model: nn.Module, data: Tensor, length: int, max_tokens: int, batch_tokens: int = 16384,
                   logit_scale: float = 1.0) -> dict[str, object]:
    """Loss / perplexity / bits per byte with non-overlapping windows of `length` tokens."""
    device = next(model.parameters()).device
    n_windows = max(1, min(max_tokens // length, (data.numel() - 1) // length))
    idx = _starts(data.numel(), length, n_windows)[:, None] + torch.arange(length + 1)[None, :]  # (N, L+1)
    nll, n = _score(model, data[idx], 0, max(1, batch_tokens // length), device, logit_scale)
    return _row("nonoverlapping", length, nll, n)


def sliding(model: nn.Module, data: Tensor, length: int, stride: int, max_tokens: int,
            batch_tokens: int = 16384, logit_scale: float = 1.0) -> dict[str, object]:
    """Sliding-window evaluation: windows of `length`, stride `stride`, last `stride` tokens scored."""
    if not 1 <= stride <= length:
        raise ValueError(f"sliding stride {stride} must be in [1, {length}]")
    device = next(model.parameters()).device
    n_windows = max(1, min(max_tokens // stride, (data.numel() - length - 1) // stride + 1))
    idx = _starts(data.numel(), length, n_windows)[:, None] + torch.arange(length + 1)[None, :]  # (N, L+1)
    nll, n = _score(model, data[idx], length - stride, max(1, batch_tokens // length), device, logit_scale)
    return _row("sliding", length, nll, n, stride=stride)


def by_length(model: nn.Module, data: Tensor, lengths: Sequence[int], max_tokens: int, *,
              sliding_stride: int = 0, sliding_tokens: int = 2048, batch_tokens: int = 16384,
              max_position: int | None = None, logit_scale: float = 1.0) -> pd.DataFrame:
    """Both protocols at every length; lengths beyond `max_position` are recorded as skipped."""
    model.eval()
    rows = []
    for length in lengths:
        if max_position is not None and length > max_position:
            rows.append({"protocol": "nonoverlapping", "length": length, "loss": float("nan"), "ppl": float("nan"),
                         "bpb": float("nan"), "tokens": 0, "note": f"skipped: beyond the table ({max_position})"})
            continue
        rows.append(nonoverlapping(model, data, length, max_tokens, batch_tokens, logit_scale))
        if sliding_stride:
            rows.append(sliding(model, data, length, min(sliding_stride, length), sliding_tokens, batch_tokens,
                                logit_scale))
    return pd.DataFrame(rows)
