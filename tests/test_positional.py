"""Defining properties of every positional encoding, and cross-checks against transformers."""

import math

import pytest
import torch

from attnlab.config import ConfigError
from attnlab.positional import (
    ENCODINGS,
    PEDims,
    PESpec,
    alibi_slopes,
    apply_rotation,
    build_encoding,
    t5_relative_bucket,
)

DIMS = PEDims(d_model=32, n_heads=4, head_dim=8, causal=True)
RELATIVE_BIAS = ["alibi", "t5", "kerple", "shaw", "relative_key_query"]
ROTARY = ["rope", "xpos", "linear", "dynamic", "yarn", "llama3"]


def make(name, dims=DIMS, **kw):
    """The encoding `name` with the parameters of `kw` it declares (scaled RoPEs trained at 64)."""
    return build_encoding(PESpec.model_validate(name).adapt(original_max_len=64, **kw), dims)


def test_registry_has_every_encoding():
    expected = {"none", "sinusoidal", "learned", "randomized", "shaw", "t5", "rope", "xpos", "alibi", "kerple",
                "fire", "linear", "dynamic", "yarn", "llama3"}
    assert expected <= set(ENCODINGS.names())


def test_unknown_encoding_lists_valid_names():
    from attnlab.config import validate

    with pytest.raises(ConfigError, match="name = 'alibbi': unknown; valid choices: .*alibi"):
        validate(PESpec, {"name": "alibbi"})
    with pytest.raises(ConfigError, match="variant = 'cubic': unknown; valid choices: log, power"):
        validate(PESpec, {"name": "kerple", "variant": "cubic"})
    with pytest.raises(ConfigError, match="clip: unknown parameter; valid choices: max_distance, num_buckets"):
        validate(PESpec, {"name": "t5", "clip": 3})


@pytest.mark.parametrize("name", ENCODINGS.names())
def test_every_encoding_declares_its_parameters_beside_it(name):
    """A spec is a name plus the class's own Params; it round-trips through its plain form."""
    spec = PESpec.model_validate(name)
    assert isinstance(spec.params, ENCODINGS[name].Params)
    assert PESpec.model_validate(spec.model_dump()) == spec

@pytest.mark.parametrize("name", ENCODINGS.names())
def test_interface_shapes(name):
    pe = make(name, base="alibi")
    pos = torch.arange(10)
    if pe.kind == "additive":
        assert pe.embed(pos).shape == (10, DIMS.d_model)
    elif pe.kind == "bias":
        b = pe.bias(pos, pos)
        assert b.shape == ((10, 10, DIMS.head_dim) if pe.query_dependent else (DIMS.n_heads, 10, 10))
    elif pe.kind == "rotary":
        r = pe.rotation(pos)
        assert r.cos.shape == r.sin.shape == (10, DIMS.head_dim // 2)
    elif pe.kind == "conditional":
        assert pe.generate(torch.randn(2, 10, DIMS.d_model)).shape == (2, 10, DIMS.d_model)
    else:
        assert pe.kind == "none"


@pytest.mark.parametrize("name", RELATIVE_BIAS)
def test_relative_biases_depend_only_on_offset(name):
    pe = make(name)
    pos = torch.arange(12)
    with torch.no_grad():
        b0, b1 = pe.bias(pos, pos), pe.bias(pos + 37, pos + 37)
    torch.testing.assert_close(b0, b1)


def test_alibi_bias_is_minus_slope_times_distance():
    pe = make("alibi")
    pos = torch.arange(6)
    b = pe.bias(pos, pos)
    m = alibi_slopes(4)
    assert torch.allclose(b[:, 5, 2], -3 * m)
    assert torch.all(b.diagonal(dim1=1, dim2=2) == 0)


def test_fire_distances_are_normalized_for_causal_pairs():
    pe = make("fire")
    pos = torch.arange(1, 50)
    rel = (pos[:, None] - pos[None, :]).float()
    with torch.no_grad():
        x = pe.psi(rel.abs()) / pe.psi(torch.maximum(pe.threshold.abs(), pos.float()))[:, None]
    causal = rel >= 0
    assert float(x[causal].max()) <= 1.0 + 1e-6 and float(x[causal].min()) >= 0.0


@pytest.mark.parametrize("name", ["rope", "xpos"])
def test_rotary_scores_depend_only_on_offset(name):
    pe = make(name)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m, n):
        rq, rk = pe.rotation(torch.tensor([m])), pe.rotation(torch.tensor([n]))
        return float((apply_rotation(q, rq, "q") * apply_rotation(k, rk, "k")).sum())

    if name == "xpos":  # XPos centres positions per call: score a pair within one call instead
        def score(m, n):  # noqa: F811
            pos = torch.tensor([m, n])
            r = pe.rotation(pos)
            qq = apply_rotation(q.expand(1, 1, 2, 8), r, "q")[0, 0, 0]
            kk = apply_rotation(k.expand(1, 1, 2, 8), r, "k")[0, 0, 1]
            return float(qq @ kk)
    assert score(10, 3) == pytest.approx(score(110, 103), rel=1e-4, abs=1e-5)


def test_xpos_decays_relative_to_rope():
    x = make("xpos")
    pos = torch.tensor([0, 400])
    r = x.rotation(pos)
    # product of q and k scales for (query 400, key 0) is zeta^(400/gamma) < 1 in every pair
    prod = r.q_scale[1] * r.k_scale[0]
    assert torch.all(prod < 1) and torch.all(prod > 0)


TO_SPLIT = torch.cat([torch.arange(0, 8, 2), torch.arange(1, 8, 2)])  # pairs (2i, 2i+1) -> (i, i + D/2)


@pytest.mark.parametrize("name", ["rope", "xpos", "linear", "yarn", "llama3", "dynamic"])
def test_rotation_matches_transformers_llama_after_the_layout_permutation(name):
    """transformers' Llama rotates (x_i, x_i+D/2); ours (x_2i, x_2i+1), RoFormer's layout: the same map after a
    fixed permutation of each head's dimensions. Its cos/sin (split-half, (T, D)) repeat ours."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    pe = make(name)
    pos = torch.arange(100)
    r = pe.rotation(pos)
    q, k = torch.randn(2, 4, 100, 8), torch.randn(2, 4, 100, 8)
    cos, sin = torch.cat((r.cos, r.cos), -1), torch.cat((r.sin, r.sin), -1)
    ref_q, ref_k = apply_rotary_pos_emb(q[..., TO_SPLIT], k[..., TO_SPLIT], cos[None], sin[None])
    if r.q_scale is not None:  # XPos: q and k scaled per frequency
        ref_q, ref_k = ref_q * torch.cat((r.q_scale, r.q_scale), -1), ref_k * torch.cat((r.k_scale, r.k_scale), -1)
    torch.testing.assert_close(apply_rotation(q, r, "q")[..., TO_SPLIT], ref_q)
    torch.testing.assert_close(apply_rotation(k, r, "k")[..., TO_SPLIT], ref_k)


def test_rope_tables_equal_llamas_rotary_embedding():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    pos = torch.arange(20)
    r = make("rope").rotation(pos)
    emb = LlamaRotaryEmbedding(LlamaConfig(hidden_size=32, num_attention_heads=4, head_dim=8,
                                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0}))
    cos, sin = emb(torch.zeros(1, 20, 8), pos[None])
    torch.testing.assert_close(torch.cat((r.cos, r.cos), -1), cos[0])
    torch.testing.assert_close(torch.cat((r.sin, r.sin), -1), sin[0])


def test_rotation_reads_strided_views_and_keeps_the_dtype():
    """q and k arrive as views of the fused projection; bf16 stays bf16."""
    r = make("xpos").rotation(torch.arange(30))
    qkv = torch.randn(2, 30, 3, 4, 8)
    q = qkv.permute(2, 0, 3, 1, 4)[0]  # (B, H, T, D), a view
    torch.testing.assert_close(apply_rotation(q, r, "q"), apply_rotation(q.contiguous(), r, "q"))
    half = apply_rotation(q.bfloat16(), r, "q")
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), apply_rotation(q, r, "q"), atol=0.05, rtol=0.02)


def test_the_complex_and_the_real_rotation_agree_with_their_gradients():
    """Eager fp32 rotates by complex products, compiled code and bf16 in real arithmetic: the same map."""
    from attnlab.positional.base import rotate_complex, rotate_real

    for name in ("rope", "xpos"):
        r = make(name).rotation(torch.arange(30))
        for which in ("q", "k"):
            c, s = r.cos_sin(which)
            qkv = torch.randn(2, 30, 3, 4, 8, dtype=torch.float64, requires_grad=True)
            x = qkv.permute(2, 0, 3, 1, 4)[1]  # a strided view, as the fused projection gives
            g = torch.randn(2, 4, 30, 8, dtype=torch.float64)
            a, b = rotate_complex(x, c.double(), s.double()), rotate_real(x, c.double(), s.double())
            torch.testing.assert_close(a, b)
            torch.testing.assert_close(apply_rotation(x, r, which), a)
            ga, = torch.autograd.grad((a * g).sum(), qkv)
            gb, = torch.autograd.grad((b * g).sum(), qkv)
            torch.testing.assert_close(ga, gb)
    odd = torch.randn(1, 1, 30, 9)[..., 1:]  # an odd storage offset: no complex view, the real form instead
    r = make("rope").rotation(torch.arange(30))
    torch.testing.assert_close(apply_rotation(odd, r, "q"), rotate_real(odd, r.cos, r.sin))


def test_rotation_is_roformer_eq_34_as_complex_products():
    d = 8
    pos = torch.arange(7)
    x = torch.randn(1, 1, 7, d)
    theta = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    # RoFormer eq. 34 with interleaved pairs (x0, x1), (x2, x3), ... as complex numbers
    xc = torch.view_as_complex(x.reshape(1, 1, 7, d // 2, 2))
    rot = torch.polar(torch.ones(7, d // 2), pos[:, None].float() * theta[None])
    ref = torch.view_as_real(xc * rot).reshape(1, 1, 7, d)
    torch.testing.assert_close(apply_rotation(x, make("rope").rotation(pos), "q"), ref)


@pytest.mark.parametrize("heads", range(1, 65))
def test_alibi_slopes_match_bloom(heads):
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    t = 5
    ref = build_alibi_tensor(torch.ones(1, t), heads, torch.float32).reshape(heads, t)
    torch.testing.assert_close(alibi_slopes(heads)[:, None] * torch.arange(t), ref, rtol=1e-6, atol=1e-7)


def test_alibi_slopes_twelve_heads():
    want = [2.0 ** -k for k in range(1, 9)] + [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(want))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_match_transformers(bidirectional):
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 301)
    ref = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional)
    assert torch.equal(t5_relative_bucket(rel, bidirectional), ref)


def test_t5_causal_test_vectors():
    n = torch.tensor([0, 15, 16, 20, 32, 64, 100, 127, 500])
    assert t5_relative_bucket(-n, bidirectional=False).tolist() == [0, 15, 16, 17, 21, 26, 30, 31, 31]


def test_t5_causal_future_keys_share_bucket_zero():
    assert set(t5_relative_bucket(torch.arange(1, 50), bidirectional=False).tolist()) == {0}


def test_sinusoidal_values():
    pe = make("sinusoidal")
    e = pe.embed(torch.tensor([0, 3]))
    assert torch.allclose(e[0, 0::2], torch.zeros(16)) and torch.allclose(e[0, 1::2], torch.ones(16))
    assert e[1, 0] == pytest.approx(math.sin(3.0)) and e[1, 1] == pytest.approx(math.cos(3.0))
    assert e[1, 2] == pytest.approx(math.sin(3.0 / 10000 ** (2 / 32)), rel=1e-5)


def test_learned_refuses_positions_beyond_table():
    pe = make("learned", max_len=16)
    pe.embed(torch.arange(16))
    with pytest.raises(ValueError, match="max_len = 16"):
        pe.embed(torch.arange(17))


def test_randomized_positions_sorted_distinct_in_range():
    pe = make("randomized", base="rope", max_len=100)
    g = torch.Generator().manual_seed(1)
    draws = [pe.default_positions(40, generator=g) for _ in range(20)]
    for p in draws:
        assert p.shape == (40,) and torch.all(p[1:] > p[:-1]) and int(p.min()) >= 0 and int(p.max()) < 100
    assert len({tuple(p.tolist()) for p in draws}) > 1
    assert pe.kind == "rotary"
    with pytest.raises(ValueError, match="exceeds max_len"):
        pe.default_positions(101)


@pytest.mark.parametrize("base", ["alibi", "sinusoidal", "t5", "rope"])
def test_randomized_wraps_any_encoding(base):
    pe = make("randomized", base=base, max_len=64)
    assert pe.kind == make(base).kind


def test_randomized_cannot_wrap_itself():
    from attnlab.config import validate

    with pytest.raises(ConfigError, match="base = .*needs another encoding"):
        validate(PESpec, {"name": "randomized", "base": "randomized"})


@pytest.mark.parametrize("name", ["linear", "dynamic", "yarn", "llama3"])
def test_scaled_rope_frequencies_come_from_transformers(name):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    pe = make(name, factor=4.0)
    inv, factor = ROPE_INIT_FUNCTIONS[name](pe.hf_config(), None, None)
    torch.testing.assert_close(pe.inv_freq, inv.float())
    assert pe.attention_factor == pytest.approx(factor)


def test_linear_scaling_is_position_interpolation():
    lin, rope = make("linear", factor=4.0), make("rope")
    pos = torch.arange(0, 64, 4)
    torch.testing.assert_close(lin.rotation(pos).cos, rope.rotation(pos // 4).cos, atol=1e-5, rtol=1e-5)


def test_dynamic_equals_rope_within_training_length_and_differs_beyond():
    dyn, rope = make("dynamic", factor=4.0), make("rope")
    short = torch.arange(64)
    torch.testing.assert_close(dyn.rotation(short).cos, rope.rotation(short).cos)
    long = torch.arange(256)
    assert not torch.allclose(dyn.rotation(long).cos, rope.rotation(long).cos)


def test_yarn_attention_factor_scales_cos_sin():
    y = make("yarn", factor=4.0)
    assert y.attention_factor == pytest.approx(0.1 * math.log(4.0) + 1.0)
    r = y.rotation(torch.tensor([0]))
    assert float(r.cos[0, 0]) == pytest.approx(y.attention_factor)


def test_kerple_power_variant_and_positivity():
    pe = make("kerple", variant="power")
    b = pe.bias(torch.arange(8), torch.arange(8))
    assert torch.all(b <= 0) and torch.all(b.diagonal(dim1=1, dim2=2) == 0)
    b.sum().backward()
    assert pe.p.grad is not None and pe.a.grad is not None


def _shaw_values_model(**kw):
    from attnlab.model import ModelConfig, build_model

    torch.manual_seed(0)
    m = build_model(ModelConfig(d_model=16, n_layers=1, n_heads=2, vocab_size=32, **kw),
                    {"name": "shaw", "clip": 3, "values": True})
    with torch.no_grad():  # value vectors large enough to matter
        m.pe.value_table.weight.normal_(0, 1.0)
        m.pe.table.weight.normal_(0, 1.0)
    return m.eval()


@pytest.mark.parametrize("mode", ["decoder", "encoder"])
def test_shaw_values_equal_the_materialized_sum(mode):
    """z_i = sum_j alpha_ij (v_j + a^V_clip(j-i)), alpha from q_i.(k_j + a^K_clip(j-i)) / sqrt(d) (eq. 3-4)."""
    m = _shaw_values_model(mode=mode)
    attn, t, d = m.blocks[0].attn, 9, 8
    x = torch.randn(2, t, 16)
    pos = torch.arange(t)
    with torch.no_grad():
        got = attn(x, m.position_context(pos, t))
        q, k, v = attn.project(x, m.position_context(pos, t))
        z = torch.zeros_like(q)
        for i in range(t):
            js = range(i + 1) if mode == "decoder" else range(t)
            rel = [min(max(j - i, -3), 3) + 3 for j in js]
            a_k, a_v = m.pe.table.weight[rel], m.pe.value_table.weight[rel]  # (J, D)
            logits = (q[:, :, i, None, :] * (k[:, :, list(js)] + a_k)).sum(-1) / math.sqrt(d)  # (B, H, J)
            alpha = logits.softmax(-1)
            z[:, :, i] = (alpha[..., None] * (v[:, :, list(js)] + a_v)).sum(-2)
        ref = attn.out(z.transpose(1, 2).reshape(2, t, 16))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_shaw_values_are_translation_invariant_and_causal():
    m = _shaw_values_model()
    tokens = torch.randint(0, 32, (2, 12))
    with torch.no_grad():
        a = m(tokens, torch.arange(12))
        b = m(tokens, torch.arange(12) + 7)
        later = tokens.clone()
        later[:, 8:] = (later[:, 8:] + 1) % 32
        c = m(later, torch.arange(12))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a[:, :8], c[:, :8], atol=1e-5, rtol=1e-5)
    assert (a[:, 8:] - c[:, 8:]).abs().max() > 1e-3
    from attnlab.model import ModelConfig, build_model

    keys = build_model(ModelConfig(d_model=16, n_layers=1, n_heads=2, vocab_size=32), {"name": "shaw", "clip": 3})
    keys.load_state_dict({n: p for n, p in m.state_dict().items() if "value_table" not in n})
    with torch.no_grad():
        m.pe.value_table.weight.zero_()  # a zero value term: the key-only model (its sdpa path)
        torch.testing.assert_close(m(tokens), keys.eval()(tokens), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["decoder", "encoder"])
def test_relative_key_query_equals_berts_formula(mode):
    """Huang et al.'s method 4 as transformers' BERT wrote it (`relative_key_query`, removed in transformers 5):
    scores = (q k^T + einsum(bhld,lrd->bhlr, q, E) + einsum(bhrd,lrd->bhlr, k, E)) / sqrt(d), E[l, r] the
    embedding of the distance l - r, then softmax and the values; here with k = t - 1 (no distance clipped)."""
    from attnlab.model import ModelConfig, build_model

    torch.manual_seed(0)
    t, d, dist = 9, 8, torch.randn(2 * 9 - 1, 8)  # BERT's distance_embedding over l - r + (t - 1)
    m = build_model(ModelConfig(d_model=16, n_layers=1, n_heads=2, vocab_size=32, mode=mode),
                    {"name": "relative_key_query", "clip": t - 1}).eval()
    with torch.no_grad():
        m.pe.table.weight.copy_(dist.flip(0))  # attnlab indexes j - i, BERT l - r = i - j
    attn, x, pos = m.blocks[0].attn, torch.randn(2, t, 16), torch.arange(t)
    with torch.no_grad():
        ctx = m.position_context(pos, t)
        got = attn(x, ctx)
        q, k, v = attn.project(x, ctx)
        e = dist[pos[:, None] - pos[None, :] + t - 1]  # (l, r, D)
        scores = (q @ k.transpose(-1, -2) + torch.einsum("bhld,lrd->bhlr", q, e)
                  + torch.einsum("bhrd,lrd->bhlr", k, e)) / math.sqrt(d)
        if mode == "decoder":
            scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
        ref = attn.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, t, 16))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_relative_key_query_key_term_matters():
    """The same table as Shaw's key term gives Shaw's logits plus k_j . a_(j-i); a zero table is NoPE."""
    from attnlab.model import ModelConfig, build_model

    cfg = ModelConfig(d_model=16, n_layers=1, n_heads=2, vocab_size=32)
    torch.manual_seed(0)
    kq = build_model(cfg, {"name": "relative_key_query", "clip": 3}).eval()
    shaw = build_model(cfg, {"name": "shaw", "clip": 3}).eval()
    nope = build_model(cfg, "none").eval()
    nope.load_state_dict({n: p for n, p in kq.state_dict().items() if not n.startswith("pe.")})
    pos, q, k = torch.arange(12), torch.randn(2, 2, 12, 8), torch.randn(2, 2, 12, 8)
    with torch.no_grad():
        kq.pe.table.weight.normal_(0, 1.0)
        shaw.pe.table.weight.copy_(kq.pe.table.weight)
        rel = kq.pe.bias(pos, pos)  # (T, T, D)
        extra = kq.position_context(pos, 12).bias_for(q, k) - shaw.position_context(pos, 12).bias_for(q, k)
        torch.testing.assert_close(extra, torch.einsum("bhkd,qkd->bhqk", k, rel), atol=1e-5, rtol=1e-5)
        assert extra.abs().max() > 0.1
        kq.pe.table.weight.zero_()
        tokens = torch.randint(0, 32, (2, 12))
        torch.testing.assert_close(kq(tokens), nope(tokens), atol=1e-5, rtol=1e-5)


def test_shaw_values_need_an_exact_attention():
    from attnlab.model import ModelConfig, build_model

    with pytest.raises(ConfigError, match="'performer': pe = 'shaw' with values needs the attention weights"):
        build_model(ModelConfig(d_model=16, n_heads=2, mode="encoder", attention="performer"),
                    {"name": "shaw", "values": True})


@pytest.mark.parametrize("causal", [True, False])
def test_cpe_is_translation_equivariant(causal):
    """Chu et al.'s PEG: shifting the input shifts the generated encoding (away from the zero-padded borders)."""
    pe = build_encoding({"name": "cpe", "kernel": 3}, PEDims(8, 2, 4, causal))
    x = torch.randn(2, 20, 8)
    with torch.no_grad():
        full, shifted = pe.generate(x), pe.generate(x[:, 5:])
    lo, hi = (2, 15) if causal else (1, 14)  # positions of `shifted` whose window is inside both inputs
    torch.testing.assert_close(shifted[:, lo:hi], full[:, 5 + lo:5 + hi])
    assert (shifted[:, 0] - full[:, 5]).abs().max() > 1e-4  # the border (zero padding) is what tells position


def test_cpe_is_causal_in_decoders_and_sees_both_sides_in_encoders():
    x = torch.randn(1, 12, 8)
    later = x.clone()
    later[:, 7:] += 1.0
    for causal in (True, False):
        pe = build_encoding({"name": "cpe", "kernel": 5}, PEDims(8, 2, 4, causal))
        with torch.no_grad():
            a, b = pe.generate(x), pe.generate(later)
        if causal:
            torch.testing.assert_close(a[:, :7], b[:, :7])
        else:
            assert (a[:, 5:7] - b[:, 5:7]).abs().max() > 1e-4


def test_cpe_model_is_causal_and_ignores_position_indices():
    from attnlab.model import ModelConfig, build_model

    m = build_model(ModelConfig(d_model=16, n_layers=2, n_heads=2, vocab_size=32), {"name": "cpe", "after_block": 1})
    tokens = torch.randint(0, 32, (2, 10))
    later = tokens.clone()
    later[:, 6:] = (later[:, 6:] + 1) % 32
    with torch.no_grad():
        a, b, c = m(tokens), m(tokens, torch.arange(10) + 100), m(later)
    torch.testing.assert_close(a, b)  # no position index enters: only the features' order
    torch.testing.assert_close(a[:, :6], c[:, :6])
    with pytest.raises(ConfigError, match="pe.after_block = 3: must be <= model.n_layers = 2"):
        build_model(ModelConfig(d_model=16, n_layers=2, n_heads=2), {"name": "cpe", "after_block": 3})
