"""attnlab's compiled CPU kernels (kernels.py, csrc/) against their eager references: the attention kernel
against the materialized softmax attention, the feed-forward kernel against nn.Sequential(Linear, act,
Linear); edge shapes, NaN, threads, determinism, the build and its fallback."""

import math
import warnings

import pytest
import torch
from torch import nn

from attnlab import kernels
from attnlab.attention import eager_attention
from attnlab.feedforward import FeedForward

pytestmark = pytest.mark.usefixtures("kernels_built")


def attention_ref(qkv, table, bias, scale, causal):
    """Eager reference in float64: q, k turned pairwise (x_2i + i x_2i+1) * (cos + i sin), then softmax."""
    q, k, v = qkv.double().permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
    if table is not None:
        z = torch.view_as_complex(table.double().contiguous())  # (T, 2, D/2)

        def turn(x, i):
            return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * z[:, i]).flatten(-2)

        q, k = turn(q, 0), turn(k, 1)
    return eager_attention(q, k, v, bias=None if bias is None else bias.double(), causal=causal, scale=scale)


@pytest.mark.parametrize("t", [1, 5, 31, 32, 33, 100])
@pytest.mark.parametrize("d", [2, 16, 32, 64])
@pytest.mark.parametrize("causal", [True, False])
def test_attention_kernel_equals_eager_reference(t, d, causal):
    """Output and the gradients of qkv and bias equal the float64 eager attention at every block edge
    (the kernel works in row blocks of 32), any even head dim, with rotation and bias."""
    torch.manual_seed(t * d)
    b, h = 2, 3
    qkv = torch.randn(b, t, 3, h, d)
    table = torch.randn(t, 2, d // 2, 2)
    bias = torch.randn(h, t, t)
    scale = 1 / math.sqrt(d)
    out, lse = torch.ops.attnlab.small_attention_forward(qkv, table, bias, scale, causal)
    x = [qkv.double().requires_grad_(), bias.double().requires_grad_()]
    ref = attention_ref(x[0], table, x[1], scale, causal)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)
    g = torch.randn_like(out)
    grad, dbias = torch.ops.attnlab.small_attention_backward(g, qkv, table, bias, out, lse, scale, causal, True)
    rq, rb = torch.autograd.grad(ref, x, g.double())
    torch.testing.assert_close(grad.double(), rq, atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(dbias.double(), rb, atol=5e-5, rtol=1e-4)


def test_attention_kernel_without_table_bias_and_on_strided_input():
    """No rotation, no bias, qkv a strided view (the kernel reads rows by stride): the reference again."""
    torch.manual_seed(0)
    big = torch.randn(2, 40, 3, 4, 16)
    qkv = big[:, ::2]  # (2, 20, 3, 4, 16), row stride twice the dense one
    out, lse = torch.ops.attnlab.small_attention_forward(qkv, None, None, 0.25, True)
    torch.testing.assert_close(out.double(), attention_ref(qkv, None, None, 0.25, True), atol=2e-5, rtol=1e-4)
    grad, dbias = torch.ops.attnlab.small_attention_backward(torch.ones_like(out), qkv, None, None, out, lse,
                                                             0.25, True, False)
    assert grad.shape == qkv.shape and dbias.numel() == 0


def test_attention_kernel_propagates_nan_and_stays_finite_for_large_scores():
    """A NaN in q reaches the output (never silently dropped); scores of +-1e4 still give a finite softmax."""
    qkv = torch.randn(1, 8, 3, 2, 4)
    qkv[0, 3, 0, 1, 2] = float("nan")
    out, _ = torch.ops.attnlab.small_attention_forward(qkv, None, None, 1.0, True)
    assert out[:, 1, 3].isnan().any()
    big = torch.randn(1, 8, 3, 2, 4) * 100
    out, _ = torch.ops.attnlab.small_attention_forward(big, None, None, 1.0, False)
    assert out.isfinite().all()
    torch.testing.assert_close(out.double(), attention_ref(big, None, None, 1.0, False), atol=1e-3, rtol=1e-4)


def test_attention_kernel_rejects_bad_input():
    qkv = torch.randn(1, 4, 3, 2, 4)
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.attnlab.small_attention_forward(qkv.double(), None, None, 1.0, True)
    with pytest.raises(RuntimeError, match="table"):
        torch.ops.attnlab.small_attention_forward(qkv, torch.randn(4, 2, 3, 2), None, 1.0, True)
    with pytest.raises(RuntimeError, match="bias"):
        torch.ops.attnlab.small_attention_forward(qkv, None, torch.randn(2, 4, 5), 1.0, True)


def make_ff(d, f, act):
    torch.manual_seed(d + f)
    ff = FeedForward(d, f, act)
    for p in ff.parameters():
        nn.init.normal_(p, std=0.5)
    return ff


@pytest.mark.parametrize("rows", [1, 63, 64, 65, 300, 1000])
@pytest.mark.parametrize("act", [nn.GELU, nn.ReLU])
def test_feedforward_kernel_equals_layers(rows, act, monkeypatch):
    """Output and every gradient (input, weights, biases) of the kernel equal the module's layers, at the
    edges of its row blocks (64 backward, 256 forward)."""
    ff = make_ff(24, 40, act())
    x = torch.randn(rows, 24)
    g = torch.randn(rows, 24)

    def run():
        xi = x.clone().requires_grad_()
        y = ff(xi)
        grads = torch.autograd.grad(y, [xi, *ff.parameters()], g)
        return y.detach(), grads

    assert ff.fused_applies(x)
    fast = run()
    monkeypatch.setattr(FeedForward, "fused", False)
    ref = run()
    torch.testing.assert_close(fast[0], ref[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(fast[1], ref[1]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_feedforward_kernel_batches_deterministic_and_thread_count_close():
    """(B, T, d) input through the kernel; the same bits twice; with one thread, equal within rounding."""
    ff = make_ff(16, 64, nn.GELU())
    x = torch.randn(3, 50, 16, requires_grad=True)

    def run():
        y = ff(x)
        return (y, *torch.autograd.grad(y.square().sum(), [x, *ff.parameters()]))

    a, b = run(), run()
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        c = run()
    finally:
        torch.set_num_threads(threads)
    for u, v in zip(a, c):
        torch.testing.assert_close(u, v, atol=1e-4, rtol=1e-5)


def test_feedforward_kernel_applies_only_where_it_computes_the_same_function(monkeypatch):
    """float64, tanh-approximated GELU, another activation, torch.compile: the layers."""
    ff = make_ff(8, 16, nn.GELU())
    x = torch.randn(4, 8)
    assert ff.fused_applies(x)
    assert not ff.fused_applies(x.double())
    assert not make_ff(8, 16, nn.GELU(approximate="tanh")).fused_applies(x)
    assert not make_ff(8, 16, nn.SiLU()).fused_applies(x)
    assert list(dict(ff.named_parameters())) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # checkpoints load
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not ff.fused_applies(x)


def test_no_grad_forward_keeps_nothing():
    """Under no_grad the feed-forward kernel keeps no pre-activation (inference memory as the layers')."""
    ff = make_ff(8, 16, nn.ReLU())
    with torch.no_grad():
        y, h = torch.ops.attnlab_mlp.mlp_forward(torch.randn(5, 8), ff[0].weight, ff[0].bias, ff[2].weight,
                                                 ff[2].bias, 0, False)
    assert y.shape == (5, 8) and h.numel() == 0


def test_kernels_off_by_environment_and_fallback_on_a_failed_build(monkeypatch):
    """ATTNLAB_KERNELS=0 turns them off; a failed build warns once, naming why, and PyTorch's kernels run."""
    kernels.available.cache_clear()
    try:
        monkeypatch.setenv("ATTNLAB_KERNELS", "0")
        assert not kernels.available("fused_mlp") and not kernels.enabled()
        kernels.available.cache_clear()
        monkeypatch.setenv("ATTNLAB_KERNELS", "1")

        def fail(stem):
            raise RuntimeError("Error building extension: no compiler")

        monkeypatch.setattr(kernels, "_build", fail)
        with pytest.warns(RuntimeWarning, match="fused_mlp.*no compiler.*PyTorch's own kernel"):
            assert not kernels.available("fused_mlp")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not kernels.available("fused_mlp")  # once: the answer is remembered
        ff = make_ff(8, 16, nn.GELU())
        assert not ff.fused_applies(torch.randn(2, 8))
        with pytest.raises(ValueError, match="valid choices: small_attention, fused_mlp"):
            kernels.available("flash")
    finally:
        kernels.available.cache_clear()


def test_bad_kernels_switch_is_a_config_error(monkeypatch):
    from attnlab.errors import ConfigError

    monkeypatch.setenv("ATTNLAB_KERNELS", "yes")
    with pytest.raises(ConfigError, match="ATTNLAB_KERNELS = 'yes': valid choices: 0, 1"):
        kernels.enabled()


def test_kernels_status_names_every_kernel():
    assert kernels.status() == {"small_attention": True, "fused_mlp": True}


@pytest.mark.parametrize("act", [nn.GELU, nn.ReLU])
def test_feedforward_kernel_propagates_nan(act):
    """A NaN input row gives a NaN output row, as the layers do (the trainer then stops on a NaN loss)."""
    ff = make_ff(8, 16, act())
    x = torch.randn(4, 8)
    x[2, 5] = float("nan")
    y = ff(x)
    assert y[2].isnan().all() and y[[0, 1, 3]].isfinite().all()


def test_build_failure_message_names_the_cause(monkeypatch):
    """The warning quotes the compiler's error (or a missing compiler), not ninja's last words."""
    log = ("Error building extension 'x': [1/2] c++ -O3 -c a.cpp\n/a/b.cpp:131:7: error: 'f' was not declared\n"
           "ninja: build stopped: subcommand failed.\n")
    assert kernels._first_error(log) == "/a/b.cpp:131:7: error: 'f' was not declared"
    assert kernels._first_error("Error building extension 'x': c++\n/bin/sh: 1: c++: not found\nninja: stop\n") \
        == "/bin/sh: 1: c++: not found"
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler: 'no-such-compiler-here' is not on PATH"):
        kernels._build("fused_mlp")
