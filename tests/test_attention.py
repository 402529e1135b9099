"""Exact backends against eager; efficient variants in their limits; causality; refusals."""

import numpy as np
import pytest
import torch

from attnlab.attention import BACKENDS, eager_attention
from attnlab.config import ConfigError, ModelConfig, PEConfig
from attnlab.efficient import VARIANTS, build_variant
from attnlab.model import build_model
from attnlab.positional import PEDims, build_encoding, score_mod_of

B, H, T, D = 2, 4, 24, 8


def qkv(t=T, tk=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    tk = tk or t
    return (torch.randn(B, H, t, D, generator=g), torch.randn(B, H, tk, D, generator=g),
            torch.randn(B, H, tk, D, generator=g))


@pytest.mark.parametrize("backend", BACKENDS.names())
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_exact_backends_equal_eager(backend, causal, with_bias):
    q, k, v = qkv()
    bias = torch.randn(H, T, T) if with_bias else None
    ref = eager_attention(q, k, v, bias=bias, causal=causal)
    torch.testing.assert_close(BACKENDS[backend](q, k, v, bias=bias, causal=causal), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS.names())
def test_causal_with_fewer_queries_aligns_to_last_keys(backend):
    q, k, v = qkv(t=6, tk=10)
    ref = eager_attention(q, k, v, causal=True)
    torch.testing.assert_close(BACKENDS[backend](q, k, v, causal=True), ref, atol=1e-5, rtol=1e-5)
    # the first query (position 4 of 10) sees keys 0..4 only
    manual = torch.softmax(q[:, :, :1] @ k[:, :, :5].transpose(-1, -2) / D ** 0.5, -1) @ v[:, :, :5]
    torch.testing.assert_close(ref[:, :, :1], manual)


@pytest.mark.parametrize("pe", ["alibi", "t5", "kerple"])
@pytest.mark.parametrize("causal", [True, False])
def test_flex_score_mod_equals_materialized_bias(pe, causal):
    enc = build_encoding(PEConfig(name=pe), PEDims(H * D, H, D, causal))
    pos = torch.arange(T) + 7
    q, k, v = qkv()
    with torch.no_grad():
        ref = eager_attention(q, k, v, bias=enc.bias(pos, pos), causal=causal)
        out = BACKENDS["flex"](q, k, v, causal=causal, score_mod=score_mod_of(enc, pos, pos))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_fire_and_shaw_have_no_score_mod_and_fall_back():
    for pe in ["fire", "shaw"]:
        enc = build_encoding(PEConfig(name=pe), PEDims(H * D, H, D, True))
        assert score_mod_of(enc, torch.arange(4), torch.arange(4)) is None


def variant(name, causal=False, **kw):
    return build_variant(name, H, D, T, causal, **kw)


@pytest.mark.parametrize("causal", [True, False])
def test_local_window_covering_sequence_equals_eager(causal):
    q, k, v = qkv()
    bias = torch.randn(H, T, T)
    m = variant("local", causal, window=T)
    torch.testing.assert_close(m(q, k, v), eager_attention(q, k, v, causal=causal), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m(q, k, v, bias), eager_attention(q, k, v, bias, causal), atol=1e-5, rtol=1e-5)


def test_local_window_masks_far_keys():
    q, k, v = qkv()
    m = variant("local", False, window=2)
    v2 = v.clone()
    v2[:, :, 10:] += 1.0
    assert torch.allclose(m(q, k, v)[:, :, :7], m(q, k, v2)[:, :, :7])


def test_linformer_identity_projections_at_k_equals_n():
    q, k, v = qkv()
    m = variant("linformer", k=T)
    with torch.no_grad():
        m.E.copy_(torch.eye(T))
        m.F.copy_(torch.eye(T))
    torch.testing.assert_close(m(q, k, v), eager_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_probsparse_with_all_queries_equals_eager():
    q, k, v = qkv()
    torch.testing.assert_close(variant("probsparse", top_u=T)(q, k, v), eager_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)


def test_probsparse_lazy_queries_get_mean_v():
    q, k, v = qkv()
    out = variant("probsparse", top_u=1)(q, k, v)
    mean_v = v.mean(dim=-2)
    lazy = (out - mean_v[:, :, None]).abs().amax(-1) < 1e-6  # (B, H, T)
    assert int(lazy.sum()) == B * H * (T - 1)


def _feature_reference(phi_q, phi_k, v, causal):
    a = phi_q @ phi_k.transpose(-1, -2)
    if causal:
        a = a.tril()
    return (a / a.sum(-1, keepdim=True)) @ v


@pytest.mark.parametrize("causal", [True, False])
def test_linear_attention_equals_quadratic_form_of_its_feature_map(causal):
    q, k, v = qkv()
    f = torch.nn.functional
    ref = _feature_reference(f.elu(q) + 1, f.elu(k) + 1, v, causal)
    torch.testing.assert_close(variant("linear", causal)(q, k, v), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("causal", [True, False])
def test_performer_equals_quadratic_form_of_its_features(causal):
    q, k, v = qkv()
    m = variant("performer", causal, features=32)
    ref = _feature_reference(m.phi(q), m.phi(k), v, causal)
    torch.testing.assert_close(m(q, k, v), ref, atol=1e-4, rtol=1e-4)


def test_performer_approximates_softmax_better_with_more_features():
    q, k, v = (x * 0.5 for x in qkv())
    exact = eager_attention(q, k, v)
    errs = [float((variant("performer", features=m, seed=1)(q, k, v) - exact).abs().mean()) for m in (8, 2048)]
    assert errs[1] < errs[0] and errs[1] < 0.05


def test_orthogonal_features_are_orthogonal_within_blocks():
    from attnlab.efficient import orthogonal_gaussian

    w = orthogonal_gaussian(D, D, torch.Generator().manual_seed(0))
    dirs = w / w.norm(dim=1, keepdim=True)
    torch.testing.assert_close(dirs @ dirs.T, torch.eye(D), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in VARIANTS.names() if VARIANTS[n].supports_causal])
def test_causal_variants_are_causal(name):
    q, k, v = qkv()
    m = variant(name, True, window=4)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 15:] += torch.randn_like(k2[:, :, 15:])
    v2[:, :, 15:] += 1.0
    a, b = m(q, k, v), m(q, k2, v2)
    torch.testing.assert_close(a[:, :, :15], b[:, :, :15])
    assert not torch.allclose(a[:, :, 15:], b[:, :, 15:])


@pytest.mark.parametrize("name", ["linformer", "fnet", "probsparse"])
def test_non_causal_variants_refuse_causal_use(name):
    with pytest.raises(ConfigError, match=f"model.attention = '{name}' is not causal"):
        variant(name, True)
    with pytest.raises(ConfigError, match="is not causal"):
        build_model(ModelConfig(mode="decoder", d_model=32, n_heads=4, attention=name), PEConfig(name="none"))


def test_fnet_is_real_part_of_2d_fft():
    m = variant("fnet")
    x = torch.randn(2, 6, 8)
    ref = np.fft.fft2(x.numpy(), axes=(-2, -1)).real
    np.testing.assert_allclose(m.mix(x).numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("name", VARIANTS.names())
def test_variants_in_a_model_have_gradients(name):
    cfg = ModelConfig(mode="encoder", d_model=32, n_layers=1, n_heads=4, d_ff=64, attention=name, max_len=32,
                      window=4, linformer_k=8, features=16)
    m = build_model(cfg, PEConfig(name="sinusoidal"))
    x = torch.randint(0, 256, (2, 20))
    m.loss(x, x).backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert m.blocks[0].attn.qkv.weight.grad is not None or name == "fnet"


def test_variant_refuses_an_encoding_it_cannot_carry():
    with pytest.raises(ConfigError, match="'performer' cannot carry a bias encoding .*accepts: none, additive, rotary"):
        build_model(ModelConfig(mode="encoder", d_model=32, n_heads=4, attention="performer"), PEConfig(name="alibi"))
    with pytest.raises(ConfigError, match="'fnet' cannot carry a rotary encoding"):
        build_model(ModelConfig(mode="encoder", d_model=32, n_heads=4, attention="fnet"), PEConfig(name="rope"))


@pytest.mark.parametrize("pe", ["alibi", "t5", "kerple"])
def test_flex_score_mod_with_non_contiguous_positions(pe):
    enc = build_encoding(PEConfig(name=pe), PEDims(H * D, H, D, True))
    pos = torch.randperm(200)[:T].sort().values  # randomized-PE style positions: gathers, not index arithmetic
    q, k, v = qkv()
    with torch.no_grad():
        ref = eager_attention(q, k, v, bias=enc.bias(pos, pos), causal=True)
        out = BACKENDS["flex"](q, k, v, causal=True, score_mod=score_mod_of(enc, pos, pos))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
