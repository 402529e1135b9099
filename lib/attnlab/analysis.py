"""Probes and measurements of what a model knows about position (notebooks 06 and 07).

* ``position_probe_r2``: held-out R^2 of a ridge probe from each layer's hidden states to the
  absolute position (Kazemnejad et al. 2023, sec. 5; Haviv et al. 2022);
* ``attention_output_variance``: variance of each attention sublayer's output by position
  (Chi et al. 2023, *Latent positional information is in the self-attention variance*);
* ``cosine_by_distance``: similarity of hidden states as a function of their distance
  (Zuo et al. 2024);
* ``position_context_decomposition``: h(c, t) = mu + pos_t + ctx_c + resid (Song & Zhong 2023): the
  shares of variance, the low-dimensional shape of pos and its near-orthogonality to ctx;
* ``attention_entropy`` and ``align_temperature``: attention entropy by position and the
  logit scale that matches it to the training length (Chi et al. 2023, attention alignment).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .model import record_entropy


@torch.no_grad()
def hidden_states(model: nn.Module, x: Tensor, positions: Tensor | None = None) -> list[Tensor]:
    """Embedding output and every block's output: a list of L+1 tensors (B, T, d)."""
    model.eval()
    _, hidden = model(x, positions, return_hidden=True)
    return [h.float() for h in hidden]


def ridge_r2(features: Tensor, target: Tensor, train: Tensor, ridge: float = 1e-3) -> float:
    """Held-out R^2 of a ridge regression (with intercept) fitted on rows `train`, scored on the rest."""
    x = features.double()
    mu, sd = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
    x = (x - mu) / sd
    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    y = target.double()
    xt, yt = x[train], y[train]
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    eye[-1, -1] = 0  # no penalty on the intercept
    w = torch.linalg.solve(xt.T @ xt + ridge * xt.shape[0] * eye, xt.T @ yt)
    test = ~train
    pred, yy = x[test] @ w, y[test]
    sst = ((yy - yy.mean()) ** 2).sum()
    return float(1 - ((yy - pred) ** 2).sum() / sst.clamp_min(1e-12))


def position_probe_r2(hiddens: list[Tensor], train_fraction: float = 0.5, ridge: float = 1e-3) -> list[float]:
    """Per layer: held-out R^2 of a linear probe predicting each token's absolute position.

    Sequences (not tokens) are split into probe-train and probe-test, so the probe is scored on
    sequences it never saw."""
    b, t, _ = hiddens[0].shape
    n_train = max(1, int(b * train_fraction))
    train = torch.zeros(b, t, dtype=torch.bool)
    train[:n_train] = True
    pos = torch.arange(t, dtype=torch.float64).expand(b, t).reshape(-1)
    return [ridge_r2(h.reshape(b * t, -1), pos, train.reshape(-1), ridge) for h in hiddens]


@torch.no_grad()
def position_context_decomposition(h: Tensor, top: int = 2) -> dict[str, float]:
    """Song & Zhong (2023): hidden states h (C contexts, T positions, d) = mu + pos_t + ctx_c + resid, the
    two-way ANOVA of the states (pos_t = mean over contexts - mu, ctx_c = mean over positions - mu). Returns
    the shares of the total variance (they sum to 1), the share of pos's variance in its top `top`
    principal components (a spiral lives in 2-3), and the mean |cosine| between pos_t and ctx_c vectors
    (near 0: nearly orthogonal)."""
    h = h.double()
    c, t, _ = h.shape
    mu = h.mean((0, 1))  # (d,)
    pos = h.mean(0) - mu  # (T, d)
    ctx = h.mean(1) - mu  # (C, d)
    resid = h - mu - pos[None] - ctx[:, None]  # (C, T, d)
    total = float(((h - mu) ** 2).sum())
    sv = torch.linalg.svdvals(pos)  # singular values of the centred position vectors
    unit = lambda m: m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # noqa: E731
    return {"pos_share": c * float((pos ** 2).sum()) / total, "ctx_share": t * float((ctx ** 2).sum()) / total,
            "resid_share": float((resid ** 2).sum()) / total,
            "pos_top_share": float((sv[:top] ** 2).sum() / (sv ** 2).sum().clamp_min(1e-24)),
            "pos_ctx_abs_cos": float((unit(pos) @ unit(ctx).T).abs().mean())}


@torch.no_grad()
def attention_output_variance(model: nn.Module, x: Tensor) -> Tensor:
    """Variance over batch and hidden units of each attention sublayer's output, by position: (layers, T)."""
    outs: list[Tensor] = []
    hooks = [blk.attn.register_forward_hook(lambda m, i, o: outs.append(o.float())) for blk in model.blocks]
    try:
        model.eval()
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack([o.transpose(0, 1).reshape(o.shape[1], -1).var(dim=1) for o in outs])  # (L, T)


def cosine_by_distance(h: Tensor, max_distance: int) -> Tensor:
    """Mean cosine similarity of hidden states (B, T, d) at distance 0..max_distance: (max_distance + 1,)."""
    z = torch.nn.functional.normalize(h.float(), dim=-1)
    sim = z @ z.transpose(1, 2)  # (B, T, T)
    t = h.shape[1]
    return torch.stack([sim.diagonal(offset=k, dim1=1, dim2=2).mean() for k in range(min(max_distance, t - 1) + 1)])


@torch.no_grad()
def attention_entropy(model: nn.Module, x: Tensor, logit_scale: float = 1.0) -> Tensor:
    """Attention entropy (nats) by layer and query position, averaged over batch and heads: (layers, T)."""
    model.eval()
    with record_entropy(model) as rec:
        model(x, logit_scale=logit_scale)
    return torch.stack(rec)


def _tail_mean(ent: Tensor) -> float:
    """Mean entropy of the queries in the last quarter of the sequence (those with the longest context)."""
    t = ent.shape[-1]
    return float(ent[..., t - max(1, t // 4):].mean())


def align_temperature(model: nn.Module, x_train_len: Tensor, x_long: Tensor, lo: float = 0.25, hi: float = 64.0,
                      iters: int = 30) -> float:
    """Logit scale s such that the attention entropy of the last-quarter queries on `x_long` matches the
    same quantity at the training length (bisection; entropy falls as s grows)."""
    target = _tail_mean(attention_entropy(model, x_train_len))

    def ent(s: float) -> float:
        return _tail_mean(attention_entropy(model, x_long, s))

    if ent(hi) > target:
        return hi
    if ent(lo) < target:
        return lo
    for _ in range(iters):  # entropy falls as the scale grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ent(mid) > target else (lo, mid)
    return (lo + hi) / 2
