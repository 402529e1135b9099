"""Probes and measurements on constructed inputs where the answer is known."""

import math

import pytest
import torch

from attnlab import analysis as A
from attnlab.model import ModelConfig, build_model


def test_probe_recovers_linear_position_and_not_noise():
    b, t, d = 16, 32, 8
    pos = torch.arange(t, dtype=torch.float32)
    informative = torch.randn(b, t, d) * 0.01
    informative[..., 0] += pos
    noise = torch.randn(b, t, d)
    r2 = A.position_probe_r2([informative, noise])
    assert r2[0] > 0.99 and r2[1] < 0.1


def test_cosine_by_distance_of_rotating_vectors():
    t, w = 20, 0.3
    ang = torch.arange(t) * w
    h = torch.stack([ang.cos(), ang.sin()], dim=-1)[None]  # (1, T, 2): cos similarity at distance k = cos(k w)
    got = A.cosine_by_distance(h, 5)
    torch.testing.assert_close(got, torch.cos(torch.arange(6) * w))


def _uniform_nope(mode="decoder"):
    m = build_model(ModelConfig(mode=mode, d_model=16, n_layers=1, n_heads=2, d_ff=32, attention="eager"),
                    "none")
    with torch.no_grad():
        m.blocks[0].attn.qkv.weight[:32].zero_()  # q = k = 0: uniform attention
    return m.eval()


def test_entropy_of_uniform_causal_attention_is_log_of_context():
    ent = A.attention_entropy(_uniform_nope(), torch.randint(0, 256, (2, 10)))
    torch.testing.assert_close(ent[0], torch.log(torch.arange(1, 11).float()), atol=1e-5, rtol=1e-5)


def test_attention_output_variance_falls_like_one_over_position():
    var = A.attention_output_variance(_uniform_nope(), torch.randint(0, 256, (256, 64)))[0]
    # uniform causal attention averages i + 1 roughly independent values: variance ~ 1 / (i + 1)
    assert var[48:].mean() < 0.25 * var[:4].mean()


def test_encoder_uniform_attention_variance_is_flat():
    var = A.attention_output_variance(_uniform_nope("encoder"), torch.randint(0, 256, (256, 64)))[0]
    assert var.max() / var.min() < 1.01


def test_align_temperature_restores_entropy():
    m = build_model(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, attention="eager"), "alibi")
    short, long = torch.randint(0, 256, (4, 32)), torch.randint(0, 256, (4, 128))
    s = A.align_temperature(m, short, long)
    target = A._tail_mean(A.attention_entropy(m, short))
    assert 0.25 < s < 64
    assert A._tail_mean(A.attention_entropy(m, long, s)) == pytest.approx(target, abs=1e-3)
    assert s > 1.0  # longer inputs spread attention: a sharper temperature brings it back
    assert math.isfinite(s)


def test_position_context_decomposition_recovers_a_known_one():
    """Constructed states: a spiral of positions in dims 0-1, contexts in dims 2-5, small noise."""
    from attnlab.analysis import position_context_decomposition

    g = torch.Generator().manual_seed(0)
    c, t, d = 40, 32, 8
    ang = torch.linspace(0, 3.0, t)
    pos = torch.zeros(t, d)
    pos[:, 0], pos[:, 1] = 3 * torch.cos(ang), 3 * torch.sin(ang)
    pos -= pos.mean(0)
    ctx = torch.zeros(c, d)
    ctx[:, 2:6] = torch.randn(c, 4, generator=g)
    ctx -= ctx.mean(0)
    h = 5.0 + pos[None] + ctx[:, None] + 0.05 * torch.randn(c, t, d, generator=g)
    r = position_context_decomposition(h)
    want_pos = c * float((pos ** 2).sum())
    want_ctx = t * float((ctx ** 2).sum())
    total = want_pos + want_ctx
    assert abs(r["pos_share"] - want_pos / total) < 0.02 and abs(r["ctx_share"] - want_ctx / total) < 0.02
    assert abs(r["pos_share"] + r["ctx_share"] + r["resid_share"] - 1) < 1e-9
    assert r["pos_top_share"] > 0.99 and r["pos_ctx_abs_cos"] < 0.05
    shuffled = h[:, torch.randperm(t, generator=g)]  # position is a label: shuffling it keeps the shares
    assert abs(position_context_decomposition(shuffled)["pos_share"] - r["pos_share"]) < 1e-9
    mixed = position_context_decomposition(h + pos.sum(1)[None, :, None] * ctx[:, None, 2:3])
    assert mixed["resid_share"] > r["resid_share"]  # an interaction term lands in the residual
