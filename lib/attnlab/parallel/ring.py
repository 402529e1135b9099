"""Ring self-attention (Li et al. 2021, "Sequence Parallelism: Long Sequence Training from System Perspective").

The sequence is split into equal chunks, one per rank, in rank order. Each rank keeps its queries
and passes its keys and values around the ring: after ``world - 1`` exchanges every query has met
every key. Blocks are merged with their log-sum-exp (the online softmax), so a rank holds one
(n/W x n/W) block of scores at a time instead of Li et al.'s (n/W x n). The backward pass sends the
keys and values around once more together with their gradient accumulators, which arrive back at
their owner after ``world`` exchanges. Positions are global: rotate queries and keys (RoPE) at
``rank * chunk + i`` before the call. Causal blocks above the diagonal are skipped (no load balancing).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def _rotate(*tensors: Tensor, group: Any = None) -> list[Tensor]:
    """Send each tensor to the next rank and receive the previous rank's (one ring step)."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    nxt = dist.get_global_rank(group, (rank + 1) % size) if group is not None else (rank + 1) % size
    prv = dist.get_global_rank(group, (rank - 1) % size) if group is not None else (rank - 1) % size
    out = [torch.empty_like(t) for t in tensors]
    ops = []
    for t, o in zip(tensors, out):
        ops.append(dist.P2POp(dist.isend, t.contiguous(), nxt, group))
        ops.append(dist.P2POp(dist.irecv, o, prv, group))
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return out


def _scores(q: Tensor, k: Tensor, scale: float, diagonal: bool, causal: bool) -> Tensor:
    s = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, n, n)
    if causal and diagonal:
        n = q.shape[-2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return s


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, group: Any) -> Tensor:
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        out = lse = None
        acc = torch.promote_types(q.dtype, torch.float32)  # accumulate in at least float32
        kv = torch.stack([k, v])  # (2, B, H, n, D): travels round the ring
        for step in range(size):
            src = (rank - step) % size  # whose keys this rank holds now
            if not (causal and src > rank):
                s = _scores(q, kv[0], scale, src == rank, causal).to(acc)
                blk_lse = torch.logsumexp(s, dim=-1)  # (B, H, n)
                blk = torch.matmul(torch.exp(s - blk_lse[..., None]), kv[1].to(acc))
                if out is None:
                    out, lse = blk, blk_lse
                else:
                    new = torch.logaddexp(lse, blk_lse)
                    out = out * torch.exp(lse - new)[..., None] + blk * torch.exp(blk_lse - new)[..., None]
                    lse = new
            if step < size - 1:
                (kv,) = _rotate(kv, group=group)
        assert out is not None and lse is not None  # step 0 is the diagonal block: never skipped
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.scale, ctx.group = causal, scale, group
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        causal, scale, group = ctx.causal, ctx.scale, ctx.group
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        acc = torch.promote_types(q.dtype, torch.float32)
        dout = dout.to(acc)
        delta = (dout * out).sum(-1, keepdim=True)  # (B, H, n, 1)
        dq = torch.zeros_like(q, dtype=acc)
        kv = torch.stack([k, v])
        dkv = torch.zeros_like(kv, dtype=acc)  # gradient of the keys and values held now
        for step in range(size):
            src = (rank - step) % size
            if not (causal and src > rank):
                p = torch.exp(_scores(q, kv[0], scale, src == rank, causal).to(acc) - lse[..., None])
                dkv[1] += torch.matmul(p.transpose(-2, -1), dout)
                ds = p * (torch.matmul(dout, kv[1].to(acc).transpose(-2, -1)) - delta)
                dq += torch.matmul(ds, kv[0].to(acc)) * scale
                dkv[0] += torch.matmul(ds.transpose(-2, -1), q.to(acc)) * scale
            if step < size - 1:
                kv, dkv = _rotate(kv, dkv, group=group)
            elif size > 1:
                (dkv,) = _rotate(dkv, group=group)  # home: after `size` steps the accumulator is its owner's
        return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype), None, None, None


def ring_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, scale: float | None = None,
                   group: Any = None) -> Tensor:
    """Softmax attention over a sequence split across ranks (Li et al. 2021); (B, H, n/W, D) chunks in rank
    order, the same output and gradients as full attention on the whole sequence."""
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"ring attention needs equal query and key chunks, got {q.shape[-2]} and {k.shape[-2]}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if not (dist.is_available() and dist.is_initialized()):
        return _local(q, k, v, causal, scale)
    return _RingAttention.apply(q, k, v, causal, scale, group)


def _local(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float) -> Tensor:
    """One process: the whole sequence is this rank's chunk."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
