"""The Transformer: causality, backends equal to eager, explicit positions, shared tables."""

import pytest
import torch

from attnlab.attention import AttentionSpec
from attnlab.config import replace
from attnlab.model import ModelConfig, build_model, record_entropy
from attnlab.positional import PESpec

PES = ["none", "sinusoidal", "learned", "rope", "xpos", "alibi", "t5", "kerple", "fire", "shaw", "linear", "yarn"]


def tiny(pe="rope", mode="decoder", attention="eager", log_length_scaling=False, **pe_kw):
    torch.manual_seed(0)
    cfg = ModelConfig(mode=mode, d_model=32, n_layers=2, n_heads=4, d_ff=64, attention=attention,
                      log_length_scaling=log_length_scaling)
    m = build_model(cfg, PESpec.model_validate(pe).adapt(max_len=64, original_max_len=32, **pe_kw))
    for p in m.parameters():  # larger weights so that positions matter visibly
        p.data.mul_(5) if p.dim() >= 2 else None
    return m.eval()


@pytest.mark.parametrize("pe", PES + ["randomized", "relative_key_query"])
def test_decoder_is_causal(pe):
    m = tiny(pe, base="alibi")
    x = torch.randint(0, 256, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, 256, (2, 8))
    pos = torch.arange(20)
    with torch.no_grad():
        a, b = m(x, pos), m(y, pos)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_encoder_is_bidirectional():
    m = tiny("alibi", mode="encoder")
    x = torch.randint(0, 256, (1, 16))
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 256
    with torch.no_grad():
        assert not torch.allclose(m(x)[:, 0], m(y)[:, 0])


BACKEND_CASES = [(b, pe) for b in ("sdpa", "flex") for pe in PES]


@pytest.mark.parametrize(("backend", "pe"), BACKEND_CASES)
@pytest.mark.parametrize("mode", ["decoder", "encoder"])
def test_backends_equal_eager(pe, backend, mode):
    ref, fast = tiny(pe, mode, "eager", hidden=8), tiny(pe, mode, backend, hidden=8)  # FIRE: 8 units compile fast
    fast.load_state_dict(ref.state_dict())
    x = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("pe", ["rope", "alibi", "t5", "kerple", "shaw", "relative_key_query", "none"])
def test_relative_encodings_are_translation_invariant(pe):
    m = tiny(pe)
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(m(x, torch.arange(16)), m(x, torch.arange(16) + 40), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pe", ["sinusoidal", "learned"])
def test_absolute_encodings_see_the_shift(pe):
    m = tiny(pe)
    x = torch.randint(0, 256, (1, 16))
    with torch.no_grad():
        assert not torch.allclose(m(x, torch.arange(16)), m(x, torch.arange(16) + 40), atol=1e-4)


def test_default_positions_are_arange():
    m = tiny("sinusoidal")
    x = torch.randint(0, 256, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x, torch.arange(10)))


def test_bad_positions_shape():
    m = tiny()
    with pytest.raises(ValueError, match=r"positions must have shape \(10,\)"):
        m(torch.zeros(1, 10, dtype=torch.long), torch.arange(9))


def test_learned_beyond_table_is_an_error():
    m = tiny("learned")
    with pytest.raises(ValueError, match="max_len = 64"):
        m(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize("pe", ["alibi", "rope"])
def test_tables_computed_once_per_forward(pe, monkeypatch):
    m = tiny(pe)
    method = "bias" if pe == "alibi" else "rotation"
    calls = []
    orig = getattr(m.pe, method)
    monkeypatch.setattr(m.pe, method, lambda *a: calls.append(1) or orig(*a))
    m(torch.zeros(1, 8, dtype=torch.long))
    assert len(calls) == 1 and len(m.blocks) == 2


def test_randomized_positions_drawn_each_forward():
    m = tiny("randomized", base="rope")
    x = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        a, b = m(x), m(x)
    assert not torch.allclose(a, b)


def test_log_length_scaling_changes_logits_and_keeps_causality():
    m, s = tiny("none"), tiny("none", log_length_scaling=True)
    s.load_state_dict(m.state_dict())
    x = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        assert not torch.allclose(m(x), s(x))


def test_gradients_flow_to_pe_parameters():
    for pe in ["t5", "kerple", "fire", "shaw", "relative_key_query", "learned"]:
        m = tiny(pe).train()
        x = torch.randint(0, 256, (2, 12))
        m.loss(x, x).backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.pe.parameters()), pe


@pytest.mark.parametrize("pe", ["alibi", "t5", "kerple", "fire", "shaw"])
def test_flex_fuses_every_bias_encoding(pe):
    ctx = tiny(pe, attention="flex").position_context(torch.arange(8), 8)
    assert ctx.bias is None and (ctx.score_mod is not None or ctx.query_mod is not None)


@pytest.mark.parametrize("pe", ["fire", "shaw"])
def test_flex_gradients_equal_eager(pe):
    ref, fast = tiny(pe, attention="eager").train(), tiny(pe, attention="flex").train()
    fast.load_state_dict(ref.state_dict())
    x = torch.randint(0, 256, (2, 16))
    for m in (ref, fast):
        m.zero_grad()
        m(x).float().pow(2).mean().backward()
    for (name, a), b in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-4, rtol=1e-3, msg=name)


PADDING_CASES = ([(a, pe) for a in ("eager", "sdpa", "local") for pe in ("sinusoidal", "alibi", "t5", "rope")]
                 + [("flex", "alibi"), ("flex", "t5"), ("flex", "rope")]  # flex: score_mods, and none
                 + [(a, pe) for a in ("linformer", "performer", "linear") for pe in ("sinusoidal", "rope")])


@pytest.mark.parametrize(("attention", "pe"), PADDING_CASES)
def test_encoder_with_pad_id_ignores_padding(attention, pe):
    """model.pad_id: appended padding changes nothing at the real positions of an encoder."""
    torch.manual_seed(0)
    cfg = ModelConfig(mode="encoder", d_model=32, n_layers=2, n_heads=4, d_ff=64, pad_id=0, max_len=32,
                      attention=AttentionSpec.model_validate(attention).adapt(window=4, k=8))
    m = build_model(cfg, pe).eval()
    x = torch.randint(1, 256, (2, 20))
    padded = torch.cat([x, torch.zeros(2, 7, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(m(padded)[:, :20], m(x), atol=1e-4, rtol=1e-4)
        unmasked = build_model(replace(cfg, pad_id=-1), pe).eval()
        unmasked.load_state_dict(m.state_dict())
        assert not torch.allclose(unmasked(padded)[:, :20], m(x), atol=1e-4)  # without pad_id the pads leak in


@pytest.mark.compiled_flex
@pytest.mark.parametrize(("pe", "mode"), [("alibi", "decoder"), ("t5", "encoder")])
def test_compiled_flex_model_equals_eager(pe, mode):
    """The model's inference path through compiled FlexAttention (the other model tests run flex uncompiled)."""
    ref, fast = tiny(pe, mode, "eager"), tiny(pe, mode, "flex")
    fast.load_state_dict(ref.state_dict())
    x = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), atol=2e-4, rtol=2e-4)


def test_rotary_attention_equals_llama_rope_attention():
    """The model rotates RoFormer's pairs (x_2i, x_2i+1); read in the split-half layout (a fixed permutation of
    each head's dimensions) its attention equals transformers' Llama RoPE attention."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    m = tiny("rope")
    attn, t, h, d = m.blocks[0].attn, 12, 4, 8
    x = torch.randn(2, t, 32)
    pos = torch.arange(t)
    with torch.no_grad():
        out = attn(x, m.position_context(pos, t))
        q, k, v = attn.qkv(x).view(2, t, 3, h, d).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        to_split = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])  # pairs (2i, 2i+1) -> (i, i + D/2)
        r = m.pe.rotation(pos)
        cos, sin = torch.cat((r.cos, r.cos), -1), torch.cat((r.sin, r.sin), -1)  # Llama's split-half tables
        q, k = apply_rotary_pos_emb(q[..., to_split], k[..., to_split], cos[None], sin[None])
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v[..., to_split], is_causal=True)
        ref = attn.out(y[..., torch.argsort(to_split)].transpose(1, 2).reshape(2, t, 32))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_activation_by_name():
    from attnlab.config import ConfigError
    from attnlab.experiments import load

    m = build_model(ModelConfig(d_model=32, n_layers=1, n_heads=4, d_ff=64, activation="relu"), "none")
    assert isinstance(m.blocks[0].mlp[1], torch.nn.ReLU)
    assert isinstance(build_model(ModelConfig(d_model=32, n_layers=1, n_heads=4, d_ff=64), "none")
                      .blocks[0].mlp[1], torch.nn.GELU)
    with pytest.raises(ConfigError, match=r"model.activation = 'swish'.*valid choices: gelu, relu"):
        load("02_lm_length_extrapolation", "smoke", {"model.activation": "swish"})


@pytest.mark.parametrize("pe", ["alibi", "rope", "shaw"])
@pytest.mark.parametrize("attention", ["sdpa", "flex"])
def test_recorded_entropy_equals_entropy_of_eager_attention(pe, attention):
    """record_entropy (forward hooks, the model unchanged) gives each layer's attention entropy by position,
    equal to the entropy of the probabilities eager attention computes."""
    m = tiny(pe, attention=attention)
    x = torch.randint(0, 256, (2, 10))
    with torch.no_grad(), record_entropy(m) as ent:
        m(x)
    assert len(ent) == 2 and ent[0].shape == (10,)
    assert not m.blocks[0].attn._forward_hooks  # removed on exit
    blk, pos = m.blocks[0], torch.arange(10)
    with torch.no_grad():
        h = blk.ln1(m.embed(x) * m.embed_scale + (m.pe.embed(pos) if m.pe.kind == "additive" else 0))
        ctx = m.position_context(pos, 10)
        q, k, _ = blk.attn.project(h, ctx)
        s = q @ k.transpose(-1, -2) / 8 ** 0.5
        bias = m.pe.bias(pos, pos) if m.pe.kind == "bias" else None
        if bias is not None:
            s = s + (torch.einsum("bhqd,qkd->bhqk", q, bias) if m.pe.query_dependent else bias)
        p = s.masked_fill(~torch.ones(10, 10, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
        ref = -(p * p.clamp_min(1e-30).log()).sum(-1).mean(dim=(0, 1))
    torch.testing.assert_close(ent[0], ref, atol=1e-5, rtol=1e-5)
