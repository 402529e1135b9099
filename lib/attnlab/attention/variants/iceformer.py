"""IceFormer (Mao et al. 2024, "IceFormer: Accelerated Inference with Long-Sequence Transformers on CPUs").

At inference, on an already trained model and without retraining, each query attends only to the
`top_k` keys with the largest q.k, found by a k-nearest-neighbour search: the maximum-inner-product
search becomes a Euclidean one by appending sqrt(M^2 - |k|^2) to every key and 0 to every query
(M = the largest key norm), so that |q' - k'|^2 = |q|^2 + M^2 - 2 q.k. `search = "exact"` takes the
exact top-k (the reference); `"hnsw"` asks faiss's HNSW index (an approximate graph search; the paper
uses its own ranking-based search). Causal: the exact search ranks the past keys only; the HNSW search
takes the queries in blocks, each searching an index of the keys before its block, and adds its own
block's past keys, so that no future key takes part. With gradients (training, fine-tuning) it is
exact attention.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ...config import Config
from ..base import ATTENTION, WITHOUT_BIAS, Attention
from ..masks import causal_mask


def _mips_to_l2(q: Tensor, k: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Queries (Tq, D) and keys (Tk, D) as float32 arrays of D + 1 columns whose L2 neighbours are the
    keys of largest inner product (Bachrach et al. 2014's transform, as IceFormer uses)."""
    norms = (k.float() ** 2).sum(-1)
    extra = (norms.max() - norms).clamp_min(0).sqrt()
    keys = torch.cat([k.float(), extra[:, None]], dim=1)
    queries = torch.cat([q.float(), torch.zeros(q.shape[0], 1)], dim=1)
    return np.ascontiguousarray(queries.numpy()), np.ascontiguousarray(keys.numpy())


def knn_keys(q: Tensor, k: Tensor, n: int, search: str, hnsw_m: int = 16, ef_search: int = 64) -> Tensor:
    """Indices (Tq, n) of the keys with the largest q.k for each query row of q (Tq, D), k (Tk, D)."""
    n = min(n, k.shape[0])
    if search == "exact":
        return torch.topk(q.float() @ k.float().T, n, dim=-1).indices
    import faiss

    queries, keys = _mips_to_l2(q.detach().cpu(), k.detach().cpu())
    index = faiss.IndexHNSWFlat(keys.shape[1], hnsw_m)
    index.hnsw.efSearch = max(ef_search, n)
    index.add(keys)
    _, idx = index.search(queries, n)
    return torch.from_numpy(idx).to(q.device)  # -1 where the graph search found fewer than n


@ATTENTION.register("iceformer")
class IceFormer(Attention):
    """IceFormer (Mao et al. 2024): at inference each query's softmax over its top-k keys by k-NN search."""

    class Params(Config):
        top_k: int = Field(32, ge=1, description="keys each query attends to")
        search: Literal["exact", "hnsw"] = Field("hnsw", description="exact top-k (the reference) or faiss HNSW")
        hnsw_m: int = Field(16, ge=2, description="HNSW graph degree")
        ef_search: int = Field(64, ge=1, description="HNSW search breadth (at least top_k)")
        block: int = Field(256, ge=1, description="causal: queries per block; each block searches the keys before it")

    accepts = WITHOUT_BIAS  # the search ranks q.k alone

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, score_mod: object = None,
                causal: bool = False, scale: float | None = None, key_padding: Tensor | None = None) -> Tensor:
        if torch.is_grad_enabled() or (self.params.top_k >= k.shape[-2] and key_padding is None):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal and q.shape[-2] == k.shape[-2],
                                                  scale=scale)
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        if self.params.search == "exact":
            return self._exact_top_k(q, k, v, causal, scale, key_padding)
        out = torch.empty_like(q)
        for bi in range(q.shape[0]):
            keep = None if key_padding is None else ~key_padding[bi]  # (Tk,) keys that may be found
            for hi in range(q.shape[1]):
                out[bi, hi] = self._hnsw_head(q[bi, hi], k[bi, hi], v[bi, hi], causal, scale, keep)
        return out

    def _hnsw_head(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, keep: Tensor | None) -> Tensor:
        """One head: bidirectional, one index over every key; causal, queries in blocks, each block searching an
        index of the keys before it (so no future key shapes the search) plus its own block's past keys."""
        tq, tk = q.shape[0], k.shape[0]
        offset = tk - tq  # queries are the last tq positions
        pos = torch.arange(tk, device=q.device)
        usable = torch.ones(tk, dtype=torch.bool, device=q.device) if keep is None else keep
        if not causal:
            real = usable.nonzero().flatten()
            idx = knn_keys(q, k[real], self.params.top_k, "hnsw", self.params.hnsw_m, self.params.ef_search)
            return self._attend(q, k, v, torch.where(idx >= 0, real[idx.clamp_min(0)], idx), scale)
        out = torch.empty_like(q)
        c = self.params.block
        for start in range(0, tq, c):
            rows = slice(start, min(start + c, tq))
            first = offset + start  # the block's first position: keys before it go through the index
            past = (usable & (pos < first)).nonzero().flatten()
            found = (knn_keys(q[rows], k[past], self.params.top_k, "hnsw", self.params.hnsw_m,
                              self.params.ef_search) if len(past) else torch.empty(rows.stop - start, 0, dtype=torch.long))
            found = torch.where(found >= 0, past[found.clamp_min(0)] if len(past) else found, found)
            local = torch.arange(first, offset + rows.stop, device=q.device)  # the block's own keys
            qpos = torch.arange(first, offset + rows.stop, device=q.device)[:, None]
            own = torch.where((local[None, :] <= qpos) & usable[local][None, :], local[None, :], -1)
            out[rows] = self._attend(q[rows], k, v, torch.cat([found, own], 1), scale)
        return out

    def _exact_top_k(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float,
                     key_padding: Tensor | None) -> Tensor:
        """The reference: the softmax over each query's exact top-k allowed keys (materialized scores)."""
        s = torch.matmul(q, k.transpose(-2, -1)).float() * scale  # (B, H, Tq, Tk)
        if causal:
            s = s.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
        if key_padding is not None:
            s = s.masked_fill(key_padding[:, None, None, :], float("-inf"))
        top = torch.topk(s, min(self.params.top_k, k.shape[-2]), dim=-1)  # -inf entries get no weight
        w = top.values.softmax(-1).to(v.dtype)  # (B, H, Tq, top_k)
        picked = v.gather(2, top.indices.flatten(2)[..., None].expand(-1, -1, -1, v.shape[-1]))
        return (w[..., None] * picked.unflatten(2, top.indices.shape[2:])).sum(-2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, idx: Tensor, scale: float) -> Tensor:
        """Softmax over the best top_k of the candidate keys idx (Tq, n), -1 marking none."""
        valid = idx >= 0
        safe = idx.clamp_min(0)
        scores = ((q[:, None, :] * k[safe]).sum(-1).float() * scale).masked_fill(~valid, float("-inf"))  # (Tq, n)
        top = torch.topk(scores, min(self.params.top_k, scores.shape[1]), dim=-1)
        w = top.values.softmax(-1).to(v.dtype)  # (Tq, top_k); -inf candidates get no weight
        return (w[..., None] * v[safe.gather(1, top.indices)]).sum(1)
