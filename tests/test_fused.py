"""The CPU fast path of the exact attention (fused.py) against the composed path and the eager reference:
both of its kernels, attnlab's compiled one and PyTorch's flash kernel."""

import math

import pytest
import torch

import attnlab.fused as fused_mod
import attnlab.model as model_mod
from attnlab.attention import eager_attention
from attnlab.config import ModelConfig, PEConfig
from attnlab.feedforward import FeedForward
from attnlab.fused import fused_qkv_applies, fused_qkv_attention
from attnlab.model import SelfAttention, build_model
from attnlab.positional import PEDims, apply_rotation, build_encoding, pair_table

# pairs (x_2i, x_2i+1) of the interleaved layout -> (i, i + D/2) of the split-half layout
D = 8
TO_SPLIT = torch.cat([torch.arange(0, D, 2), torch.arange(1, D, 2)])


@pytest.fixture(params=["kernel", "flash"])
def attention_kernel(request, monkeypatch, kernels_built):
    """Each test of the fast path runs with attnlab's compiled kernel and with PyTorch's flash kernel."""
    if request.param == "flash":
        monkeypatch.setattr(fused_mod, "SMALL_T", {True: 0, False: 0})
    return request.param


def grads_of(m, x, y):
    loss = m.loss(x, y)
    loss.backward()
    out = loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad(set_to_none=True)
    return out


def fast_and_composed(pe, mode, t, monkeypatch):
    """Loss and gradients of one batch through the fast path (which must run once per layer), then through
    the composed path (both compiled kernels off)."""
    torch.manual_seed(0)
    cfg = ModelConfig(mode=mode, d_model=64, n_layers=2, n_heads=2, d_ff=64, attention="sdpa")
    m = build_model(cfg, PEConfig(name=pe, max_len=64, original_max_len=32)).train()
    x, y = torch.randint(0, 256, (3, t)), torch.randint(0, 256, (3, t))
    calls = []
    real = model_mod.fused_qkv_attention
    monkeypatch.setattr(model_mod, "fused_qkv_attention", lambda *a: calls.append(1) or real(*a))
    fast = grads_of(m, x, y)
    assert len(calls) == cfg.n_layers  # the fast path ran, once per layer
    monkeypatch.setattr(SelfAttention, "fused", False)
    monkeypatch.setattr(FeedForward, "fused", False)
    ref = grads_of(m, x, y)
    assert len(calls) == cfg.n_layers
    return fast, ref


@pytest.mark.parametrize("pe", ["rope", "xpos", "none", "sinusoidal", "learned", "yarn"])
@pytest.mark.parametrize("mode", ["decoder", "encoder"])
def test_fused_flash_path_gives_the_composed_paths_bits(pe, mode, monkeypatch):
    """Training through the fast path with PyTorch's flash kernel: the same loss and every gradient to the
    bit as the composed path (rotate_qkv, permute, F.scaled_dot_product_attention), which picks the same
    CPU kernel. (Bits need the same vectorization of the complex products: head_dim 32, as in every
    profile; at head_dim 8 a short loop rounds differently, within float tolerance -- the eager-reference
    test below.)"""
    monkeypatch.setattr(fused_mod, "SMALL_T", {True: 0, False: 0})
    monkeypatch.setattr(FeedForward, "fused", False)
    fast, ref = fast_and_composed(pe, mode, 24, monkeypatch)
    assert torch.equal(fast[0], ref[0])
    assert fast[1].keys() == ref[1].keys()
    for n in ref[1]:
        assert torch.equal(fast[1][n], ref[1][n]), n


@pytest.mark.parametrize("pe", ["rope", "xpos", "yarn", "none", "sinusoidal", "learned", "alibi", "t5", "kerple",
                                "fire"])
@pytest.mark.parametrize("mode", ["decoder", "encoder"])
def test_fused_kernel_path_trains_like_the_composed_path(pe, mode, monkeypatch, kernels_built):
    """Training through attnlab's compiled kernels (attention and feed-forward): the composed path's loss
    and gradients within float32 rounding, every layer through the kernel, bias encodings included."""
    fast, ref = fast_and_composed(pe, mode, 40, monkeypatch)
    torch.testing.assert_close(fast[0], ref[0], atol=1e-5, rtol=1e-5)
    assert fast[1].keys() == ref[1].keys()
    for n in ref[1]:  # relative to the largest entry (a softmax-invariant shift has a zero gradient)
        scale = ref[1][n].abs().max().item()
        torch.testing.assert_close(fast[1][n], ref[1][n], atol=1e-5 * max(scale, 1e-3), rtol=1e-4, msg=n)


@pytest.mark.parametrize("pe", ["rope", "xpos", None])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_attention_equals_eager_reference(pe, causal, bias, attention_kernel):
    """Value and gradients (of qkv and of a bias) equal the materialized softmax attention of the split-half
    rotated q, k."""
    if bias and attention_kernel == "flash":
        pytest.skip("the flash path takes no bias")
    torch.manual_seed(0)
    b, t, h = 2, 20, 3
    qkv = torch.randn(b, t, 3, h, D, requires_grad=True)  # pairs interleaved
    scale = 0.7 / math.sqrt(D)
    table, rot = None, None
    if pe is not None:
        rot = build_encoding(PEConfig(name=pe), PEDims(h * D, h, D, causal=causal)).rotation(torch.arange(t))
        table = pair_table(rot)
    bias_t = torch.randn(h, t, t, requires_grad=True) if bias else None
    out = fused_qkv_attention(qkv, table, scale, causal, bias_t)  # (B, H, T, D)
    q, k, v = qkv[..., TO_SPLIT].permute(2, 0, 3, 1, 4)  # split-half layout
    if rot is not None:
        q, k = apply_rotation(q, rot, "q"), apply_rotation(k, rot, "k")
    ref = eager_attention(q, k, v, bias=bias_t, causal=causal, scale=scale)[..., torch.argsort(TO_SPLIT)]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    wrt = (qkv, bias_t) if bias else (qkv,)
    for ga, gb in zip(torch.autograd.grad(out, wrt, g), torch.autograd.grad(ref, wrt, g)):
        torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-5)


def test_fused_path_is_only_taken_where_it_applies(monkeypatch, kernels_built):
    """float64, bf16, a learned (differentiable) table, a bias of another shape or beyond attnlab's kernel,
    and torch.compile take the composed path; calling the fast path outside its domain is an error, not a
    silently different computation."""
    table = pair_table(build_encoding(PEConfig(name="rope"), PEDims(32, 4, D)).rotation(torch.arange(6)))
    qkv = torch.randn(1, 6, 3, 4, D)
    bias = torch.randn(4, 6, 6)
    assert fused_qkv_applies(qkv, table) and fused_qkv_applies(qkv, None) and fused_qkv_applies(qkv, None, bias)
    assert not fused_qkv_applies(qkv.double(), None)
    assert not fused_qkv_applies(qkv.bfloat16(), None)
    assert not fused_qkv_applies(qkv, table.clone().requires_grad_())
    assert not fused_qkv_applies(qkv, None, bias[None].expand(2, 4, 6, 6))  # a per-example bias
    assert not fused_qkv_applies(qkv, None, bias.double())
    with pytest.raises(ValueError, match="float32 CPU"):
        fused_qkv_attention(qkv.double(), None, 1.0, True)
    monkeypatch.setattr(fused_mod, "SMALL_T", {True: 4, False: 4})  # longer than the kernel: flash, no bias
    assert fused_qkv_applies(qkv, table) and not fused_qkv_applies(qkv, None, bias)
    with pytest.raises(ValueError, match="bias"):
        fused_qkv_attention(qkv, None, 1.0, True, bias)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not fused_qkv_applies(qkv, table)


@pytest.mark.parametrize("what", ["shaw", "eager", "record", "padding"])
def test_fused_path_skipped_for_query_dependent_bias_backends_records_and_padding(what, monkeypatch):
    """Shaw's query-dependent bias, another backend, an entropy record or padding keys: the composed path."""
    calls = []
    monkeypatch.setattr(model_mod, "fused_qkv_attention", lambda *a: calls.append(1))
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=4, d_ff=64, attention="eager" if what == "eager" else "sdpa",
                      pad_id=0 if what == "padding" else -1)
    m = build_model(cfg, PEConfig(name="shaw" if what == "shaw" else "rope"))
    if what == "record":
        m.blocks[0].attn.record = []
    x = torch.randint(1, 256, (2, 10))
    if what == "padding":
        x[0, :3] = 0
    with torch.no_grad():
        m(x, torch.arange(10))
    assert calls == []
