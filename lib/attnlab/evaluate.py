"""Evaluation by length: non-overlapping windows and sliding window (Press et al. 2022, sec. 4 / App. B).

Both protocols score the same tokens at every length: `segments` of S tokens (S = the longest
evaluation length) spread evenly over the split. Non-overlapping: each segment is cut into
windows of L tokens and every token is scored with the context inside its window (early
tokens of a window see little context). Sliding window with stride s: the last tokens of each
segment are scored s at a time, each with a window of L tokens ending there, so every scored
token sees at least L - s tokens of context (App. B's protocol, with s = 1 there). Pairing the
tokens across lengths and protocols removes the text-sampling noise from the comparison.
Batches are sized by tokens, so evaluation at 16L stays within memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from .config import Config


class EvalConfig(Config):
    """Evaluation by length: non-overlapping windows and sliding window."""

    lengths: tuple[Annotated[int, Field(ge=2)], ...] = (128, 256, 512, 1024, 2048)
    max_tokens: int = Field(65536, ge=1, description="tokens scored per length (non-overlapping)")
    sliding_stride: int = Field(0, ge=0, description="0: no sliding-window evaluation")
    sliding_tokens: int = Field(2048, ge=1, description="tokens scored per length (sliding)")
    batch_size: int = Field(8, ge=1)

LN2 = math.log(2.0)


@torch.no_grad()
def _score(model: nn.Module, windows: Tensor, score_from: int, batch: int, device: torch.device,
           logit_scale: float = 1.0) -> tuple[Tensor, int]:
    """Next-token NLL (nats) summed per window (N,) over positions >= score_from of each window (N, L+1),
    and the tokens scored per window."""
    sums = []
    for i in range(0, windows.shape[0], batch):
        w = windows[i: i + batch].to(device).long()
        x, y = w[:, :-1], w[:, 1:]
        logits = model(x, logit_scale=logit_scale) if logit_scale != 1.0 else model(x)
        ce = F.cross_entropy(logits[:, score_from:].float().flatten(0, 1), y[:, score_from:].flatten(),
                             reduction="none").view(w.shape[0], -1)  # (b, L - score_from)
        sums.append(ce.double().sum(1).cpu())
    return torch.cat(sums), windows.shape[1] - 1 - score_from


def segment_starts(n: int, segment: int, count: int, margin: int) -> Tensor:
    """`count` segment starts spread evenly over a split of n tokens, leaving `margin` tokens of context before."""
    last = n - segment - 1
    if last < margin:
        raise ValueError(f"split of {n} tokens is too short for segments of {segment} after {margin} tokens")
    return torch.linspace(margin, last, count).round().long()


def _row(protocol: str, length: int, per_window: Tensor, per_window_tokens: int, n_segments: int,
         **extra: object) -> dict[str, object]:
    """One length's result; `segment_nll` keeps the NLL summed per evaluation segment (for intervals that
    resample segments, `segment_rows`)."""
    n = per_window.numel() * per_window_tokens
    loss = float(per_window.sum()) / max(n, 1)
    seg = per_window.view(n_segments, -1).sum(1)  # windows are segment-major
    return {"protocol": protocol, "length": length, "loss": loss, "ppl": math.exp(min(loss, 50)),
            "bpb": loss / LN2, "tokens": n, "segment_tokens": n // n_segments,
            "segment_nll": [float(v) for v in seg], **extra}


def _segments(data: Tensor, length: int, max_tokens: int, segment: int | None) -> tuple[Tensor, int]:
    """Segment starts (a segment's worth of context left before the first) and the segment length."""
    segment = max(segment or length, length)
    count = max(1, min(max_tokens // segment, (data.numel() - 2 * segment - 1) // segment))
    return segment_starts(data.numel(), segment, count, segment), segment


def nonoverlapping(model: nn.Module, data: Tensor, length: int, max_tokens: int, batch_tokens: int = 16384,
                   logit_scale: float = 1.0, segment: int | None = None) -> dict[str, object]:
    """Loss / perplexity / bits per byte with non-overlapping windows of `length` tokens tiling each segment."""
    device = next(model.parameters()).device
    starts, segment = _segments(data, length, max_tokens, segment)
    offsets = torch.arange(segment // length) * length  # windows inside a segment
    idx = (starts[:, None] + offsets[None, :]).reshape(-1, 1) + torch.arange(length + 1)[None, :]  # (N, L+1)
    nll, per = _score(model, data[idx], 0, max(1, batch_tokens // length), device, logit_scale)
    return _row("nonoverlapping", length, nll, per, len(starts))


def sliding(model: nn.Module, data: Tensor, length: int, stride: int, max_tokens: int,
            batch_tokens: int = 16384, logit_scale: float = 1.0, segment: int | None = None,
            segments_tokens: int | None = None) -> dict[str, object]:
    """Sliding-window evaluation: the last tokens of each segment scored `stride` at a time, each with a
    window of `length` tokens ending there (context >= length - stride)."""
    if not 1 <= stride <= length:
        raise ValueError(f"sliding stride {stride} must be in [1, {length}]")
    device = next(model.parameters()).device
    starts, seg = _segments(data, length, segments_tokens or max_tokens, segment)
    per_segment = max(stride, (max_tokens // len(starts)) // stride * stride)
    ends = torch.arange(per_segment // stride) * stride + stride + (seg - per_segment)  # window ends in a segment
    first = (starts[:, None] + ends[None, :] - length).reshape(-1, 1)  # (N, 1) window starts
    idx = first + torch.arange(length + 1)[None, :]  # (N, L+1)
    nll, per = _score(model, data[idx], length - stride, max(1, batch_tokens // length), device, logit_scale)
    return _row("sliding", length, nll, per, len(starts), stride=stride)


def by_length(model: nn.Module, data: Tensor, lengths: Sequence[int], max_tokens: int, *,
              sliding_stride: int = 0, sliding_tokens: int = 2048, batch_tokens: int = 16384,
              max_position: int | None = None, logit_scale: float = 1.0) -> pd.DataFrame:
    """Both protocols at every length, on the same segments of the split (as long as the longest length);
    lengths beyond `max_position` are recorded as skipped."""
    model.eval()
    segment = max(lengths)
    rows = []
    for length in lengths:
        if max_position is not None and length > max_position:
            rows.append({"protocol": "nonoverlapping", "length": length, "loss": float("nan"), "ppl": float("nan"),
                         "bpb": float("nan"), "tokens": 0, "note": f"skipped: beyond the table ({max_position})"})
            continue
        rows.append(nonoverlapping(model, data, length, max_tokens, batch_tokens, logit_scale, segment))
        if sliding_stride:
            rows.append(sliding(model, data, length, min(sliding_stride, length), sliding_tokens, batch_tokens,
                                logit_scale, segment, segments_tokens=max_tokens))
    return pd.DataFrame(rows)


def segment_rows(ev: pd.DataFrame) -> pd.DataFrame:
    """One row per (evaluation row, segment) with its bits per byte: the units that intervals resample."""
    ev = ev[ev["segment_nll"].map(lambda v: isinstance(v, list) and len(v) > 0)] if "segment_nll" in ev else ev.iloc[0:0]
    if ev.empty:
        return pd.DataFrame(columns=["protocol", "length", "segment", "bpb"])
    out = ev.explode("segment_nll").rename(columns={"segment_nll": "nll"})
    out["segment"] = out.groupby(level=0).cumcount()
    out["bpb"] = out["nll"].astype(float) / out["segment_tokens"] / LN2
    keep = [c for c in out.columns if c not in ("loss", "ppl", "tokens", "nll", "segment_tokens", "stride", "note")]
    return out[keep].reset_index(drop=True)


@torch.no_grad()
def masked_accuracy(model: nn.Module, x: Tensor, y: Tensor, mask: Tensor, n_classes: int, exact: bool = False,
                    batch: int = 64) -> float:
    """Accuracy of arg-max predictions (over the first n_classes logits) at the masked positions:
    per token, or per sequence when `exact` (every masked position right: exact match)."""
    model.eval()
    device = next(model.parameters()).device
    hits, total = 0.0, 0.0
    for i in range(0, x.shape[0], batch):
        pred = model(x[i:i + batch].to(device))[..., :n_classes].argmax(-1).cpu()
        right, m = pred == y[i:i + batch], mask[i:i + batch]
        if exact:
            hits += float((right | ~m).all(dim=1).sum())
            total += right.shape[0]
        else:
            hits += float((right & m).sum())
            total += float(m.sum())
    return hits / max(total, 1.0)
