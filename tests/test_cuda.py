"""CUDA paths (skipped without a GPU): compiled FlexAttention forward and backward against eager for every
bias encoding, and a bf16-autocast training step of the model on each exact backend."""

import pytest
import torch

from attnlab.attention import eager_attention, flex_attention_backend
from attnlab.model import ModelConfig, build_model
from attnlab.positional import PEDims, build_encoding, score_mod_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
B, H, T, D = 2, 4, 256, 64


@pytest.mark.parametrize("pe", ["alibi", "t5", "kerple", "fire", "shaw", "relative_key_query"])
@pytest.mark.parametrize("causal", [True, False])
def test_compiled_flex_forward_and_backward_equal_eager(pe, causal):
    enc = build_encoding(pe, PEDims(H * D, H, D, causal)).cuda()
    pos = torch.arange(T, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device="cuda", generator=g, requires_grad=True) for _ in range(3))
    if enc.query_dependent:  # shaw: q . a; relative_key_query: q . a + k . a
        rel = enc.bias(pos, pos)
        bias = torch.einsum("bhqd,qkd->bhqk", q, rel)
        if enc.key_dependent:
            bias = bias + torch.einsum("bhkd,qkd->bhqk", k, rel)
        mod = enc.query_score_mod(q, k, pos, pos)
    else:
        bias, mod = enc.bias(pos, pos), score_mod_of(enc, pos, pos)
    ref = eager_attention(q, k, v, bias=bias, causal=causal)
    out = flex_attention_backend(q, k, v, causal=causal, score_mod=mod, compiled=True)
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
    grads_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("backend", ["eager", "sdpa", "flex"])
def test_bf16_training_step_is_finite_on_cuda(backend):
    torch.manual_seed(0)
    m = build_model(ModelConfig(d_model=128, n_layers=2, n_heads=4, d_ff=256, attention=backend),
                    "alibi").cuda()
    x = torch.randint(0, 256, (4, 128), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = m.loss(x[:, :-1], x[:, 1:])
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
