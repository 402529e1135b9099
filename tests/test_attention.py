"""Exact backends against eager; efficient variants in their limits; causality; refusals."""

import math

import numpy as np
import pytest
import torch

from attnlab.attention import (
    ATTENTION,
    AttentionSpec,
    AttnDims,
    build_attention,
    eager_attention,
    flex_attention_backend,
    flex_block_mask,
    materialize_score_mod,
    sdpa_attention,
)
from attnlab.attention.masks import FLEX_BLOCK_SIZE
from attnlab.config import ConfigError
from attnlab.model import ModelConfig, build_model
from attnlab.positional import PEDims, build_encoding, score_mod_of

BACKENDS = {"eager": eager_attention, "sdpa": sdpa_attention, "flex": flex_attention_backend}
EXACT = [n for n in ATTENTION.names() if ATTENTION[n].exact]
VARIANTS = [n for n in ATTENTION.names() if not ATTENTION[n].exact]

B, H, T, D = 2, 4, 24, 8


def qkv(t=T, tk=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    tk = tk or t
    return (torch.randn(B, H, t, D, generator=g), torch.randn(B, H, tk, D, generator=g),
            torch.randn(B, H, tk, D, generator=g))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_exact_backends_equal_eager(backend, causal, with_bias):
    q, k, v = qkv()
    bias = torch.randn(H, T, T) if with_bias else None
    ref = eager_attention(q, k, v, bias=bias, causal=causal)
    torch.testing.assert_close(BACKENDS[backend](q, k, v, bias=bias, causal=causal), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("causal", [True, False])
def test_every_exact_attention_module_equals_eager_through_the_one_signature(name, causal):
    """attn(q, k, v, *, bias, score_mod, causal, scale, key_padding), as transformers' attention interface."""
    q, k, v = qkv()
    bias, pad = torch.randn(H, T, T), torch.zeros(B, T, dtype=torch.bool)
    pad[1, 20:] = True
    m = build_attention(name, AttnDims(H, D, T, causal))
    with torch.no_grad():
        out = m(q, k, v, bias=bias, score_mod=None, causal=causal, scale=0.3, key_padding=pad)
    ref = eager_attention(q, k, v, bias=bias + torch.zeros(B, 1, 1, T).masked_fill(pad[:, None, None], float("-inf")),
                          causal=causal, scale=0.3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("bias_shape", [(H, T, T), (1, H, T, T), (T, T)])
def test_sdpa_with_a_bias_runs_the_fused_cpu_kernel(causal, bias_shape):
    """A bias reaches SDPA as a 4-D float mask: with fewer dims torch drops to its math kernel (materialized
    scores, about 1.5x slower at T = 128), which the flash-only context below refuses."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (x.requires_grad_() for x in qkv())
    bias = torch.randn(bias_shape)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = BACKENDS["sdpa"](q, k, v, bias=bias, causal=causal)
        out.sum().backward()
    torch.testing.assert_close(out, eager_attention(q, k, v, bias=bias, causal=causal), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_causal_with_fewer_queries_aligns_to_last_keys(backend):
    q, k, v = qkv(t=6, tk=10)
    ref = eager_attention(q, k, v, causal=True)
    torch.testing.assert_close(BACKENDS[backend](q, k, v, causal=True), ref, atol=1e-5, rtol=1e-5)
    # the first query (position 4 of 10) sees keys 0..4 only
    manual = torch.softmax(q[:, :, :1] @ k[:, :, :5].transpose(-1, -2) / D ** 0.5, -1) @ v[:, :, :5]
    torch.testing.assert_close(ref[:, :, :1], manual)


@pytest.mark.parametrize("pe", ["alibi", "t5", "kerple", "kerple-power"])
@pytest.mark.parametrize("causal", [True, False])
def test_flex_score_mod_equals_materialized_bias(pe, causal):
    name, _, variant = pe.partition("-")
    enc = build_encoding({"name": name, "variant": variant} if variant else name, PEDims(H * D, H, D, causal))
    pos = torch.arange(T) + 7
    q, k, v = qkv()
    with torch.no_grad():
        ref = eager_attention(q, k, v, bias=enc.bias(pos, pos), causal=causal)
        out = BACKENDS["flex"](q, k, v, causal=causal, score_mod=score_mod_of(enc, pos, pos))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("causal", "positions"), [(True, "contiguous"), (False, "gathered")])
def test_fire_score_mod_equals_materialized_bias(causal, positions):
    """FIRE's MLP unrolled in the score_mod (8 hidden units here: the compile time grows with them)."""
    enc = build_encoding({"name": "fire", "threshold": 5.0, "hidden": 8}, PEDims(H * D, H, D, causal))
    for p in enc.parameters():  # away from the initialization, so that every head and unit matters
        p.data.add_(0.3 * torch.randn_like(p))
    pos = torch.arange(T) + 3 if positions == "contiguous" else torch.randperm(100)[:T].sort().values
    q, k, v = qkv()
    with torch.no_grad():
        ref = eager_attention(q, k, v, bias=enc.bias(pos, pos), causal=causal)
        out = BACKENDS["flex"](q, k, v, causal=causal, score_mod=score_mod_of(enc, pos, pos))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_shaw_query_score_mod_equals_materialized_key_term(causal):
    enc = build_encoding({"name": "shaw", "clip": 5}, PEDims(H * D, H, D, causal))
    enc.table.weight.data.normal_(0, 1.0)
    pos = torch.arange(T) + 11
    q, k, v = qkv()
    bias = torch.einsum("bhqd,qkd->bhqk", q, enc.bias(pos, pos))  # (B, H, T, T): q_i . a_(j - i)
    with torch.no_grad():
        ref = eager_attention(q, k, v, bias=bias, causal=causal)
        out = BACKENDS["flex"](q, k, v, causal=causal, score_mod=enc.query_score_mod(q, k, pos, pos))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert score_mod_of(enc, pos, pos) is None  # query-dependent: no position-only score_mod


@pytest.mark.parametrize("causal", [True, False])
def test_relative_key_query_score_mod_equals_materialized_terms(causal):
    """Huang et al.'s two terms, q_i . a_(j-i) + k_j . a_(j-i), looked up per score as the materialized bias."""
    enc = build_encoding({"name": "relative_key_query", "clip": 5}, PEDims(H * D, H, D, causal))
    enc.table.weight.data.normal_(0, 1.0)
    pos = torch.arange(T) + 11
    q, k, v = qkv()
    rel = enc.bias(pos, pos)  # (T, T, D)
    bias = torch.einsum("bhqd,qkd->bhqk", q, rel) + torch.einsum("bhkd,qkd->bhqk", k, rel)
    with torch.no_grad():
        ref = eager_attention(q, k, v, bias=bias, causal=causal)
        out = BACKENDS["flex"](q, k, v, causal=causal, score_mod=enc.query_score_mod(q, k, pos, pos))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.compiled_flex
@pytest.mark.parametrize(("pe", "causal"), [("alibi", True), ("t5", False), ("fire", True), ("shaw", False)])
def test_compiled_flex_score_mods_equal_eager(pe, causal):
    """The compiled kernel with each kind of score_mod: arithmetic on positions (ALiBi), a table lookup by
    bucket (T5), an MLP unrolled per score (FIRE) and a query-dependent term (Shaw et al.); the other score_mod
    tests above run flex uncompiled (tests/conftest.py)."""
    kw = {"hidden": 8} if pe == "fire" else {"clip": 5} if pe == "shaw" else {}
    enc = build_encoding({"name": pe, **kw}, PEDims(H * D, H, D, causal))
    for p in enc.parameters():  # away from the initialization, so that every head and table entry matters
        p.data.add_(0.3 * torch.randn_like(p))
    pos = torch.randperm(100)[:T].sort().values  # gathered positions
    q, k, v = qkv()
    if pe == "shaw":
        bias, mod = torch.einsum("bhqd,qkd->bhqk", q, enc.bias(pos, pos)), enc.query_score_mod(q, k, pos, pos)
    else:
        bias, mod = enc.bias(pos, pos), score_mod_of(enc, pos, pos)
    with torch.no_grad():
        out = flex_attention_backend(q, k, v, causal=causal, score_mod=mod, compiled=True)
        ref = eager_attention(q, k, v, bias=bias, causal=causal)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pe", ["alibi", "t5", "kerple", "kerple-power", "fire"])
def test_materialized_score_mod_equals_bias(pe):
    name, _, variant = pe.partition("-")
    enc = build_encoding({"name": name, "variant": variant} if variant else name, PEDims(H * D, H, D, False))
    pos = torch.arange(T)
    scores = torch.randn(B, H, T, T)
    torch.testing.assert_close(materialize_score_mod(scores, score_mod_of(enc, pos, pos)),
                               scores + enc.bias(pos, pos), atol=1e-5, rtol=1e-5)


@pytest.mark.compiled_flex
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("compiled", [True, False])
def test_flex_window_block_mask_equals_local_attention(causal, compiled):
    q, k, v = qkv(t=300)  # more than two blocks of FLEX_BLOCK_SIZE, with a partial last block
    m = build_attention({"name": "local", "window": 40}, AttnDims(H, D, 300, causal))
    with torch.no_grad():
        out = BACKENDS["flex"](q, k, v, causal=causal, window=40, compiled=compiled)
        torch.testing.assert_close(out, call(m, q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.compiled_flex
@pytest.mark.parametrize(("t", "causal"), [(8, False), (24, True), (40, False), (136, True)])
def test_compiled_flex_equals_eager_at_awkward_lengths(t, causal):
    """Lengths below one block and 8 mod 16 (where torch's compiled CPU kernel needs smaller blocks)."""
    q, k, v = qkv(t=t)
    with torch.no_grad():
        out = flex_attention_backend(q, k, v, causal=causal, compiled=True)
    torch.testing.assert_close(out, eager_attention(q, k, v, causal=causal), atol=1e-5, rtol=1e-5)


def test_flex_block_mask_tiles_and_skips_blocks():
    full, causal = flex_block_mask(512, 512), flex_block_mask(512, 512, causal=True)
    assert full.BLOCK_SIZE == causal.BLOCK_SIZE == (FLEX_BLOCK_SIZE, FLEX_BLOCK_SIZE)
    n = 512 // FLEX_BLOCK_SIZE
    assert int(full.full_kv_num_blocks.sum()) == n * n  # every block computed, none masked
    # causal: the diagonal blocks are partial, those above it are skipped
    assert int(causal.kv_num_blocks.sum()) == n and int(causal.full_kv_num_blocks.sum()) == n * (n - 1) // 2
    window = flex_block_mask(1024, 1024, window=64)
    assert int((window.kv_num_blocks + window.full_kv_num_blocks).sum()) < (1024 // FLEX_BLOCK_SIZE) ** 2


@pytest.mark.compiled_flex
def test_compiled_flex_memory_stays_linear_after_many_shapes():
    """Past dynamo's recompile limit (8) torch silently runs the uncompiled kernel, which materializes the
    (Tq, Tk) scores; the compiled path raises it for sweeps. Without a tiled block mask the compiled CPU
    kernel allocates the scores per thread."""
    import torch._dynamo

    from attnlab.attention.backends import FLEX_RECOMPILE_LIMIT, _compiled_flex
    from attnlab.bench.memory import peak_memory_bytes

    _compiled_flex()
    assert torch._dynamo.config.recompile_limit >= FLEX_RECOMPILE_LIMIT >= 64
    t = 2048
    q, k, v = (x[:1, :1] for x in qkv(t=t))

    def run():
        with torch.no_grad():
            BACKENDS["flex"](q, k, v, compiled=True)

    run()
    peak = peak_memory_bytes(run, "cpu")
    if peak != peak:  # NaN: no /proc on this platform
        pytest.skip("peak memory is measured through /proc")
    assert peak < t * t * 4 / 4, f"peak {peak / 1e6:.1f} MB: one (T, T) float32 score matrix is {t * t * 4 / 1e6:.1f} MB"


def variant(name, causal=False, t=T, **kw):
    """The attention `name` with those parameters of `kw` its class declares."""
    return build_attention(AttentionSpec.model_validate(name).adapt(**kw), AttnDims(H, D, t, causal))


def call(m, q, k, v, **kw):
    """Call an attention module with the causality it was built for."""
    return m(q, k, v, causal=m.dims.causal, **kw)


@pytest.mark.parametrize("causal", [True, False])
def test_local_window_covering_sequence_equals_eager(causal):
    q, k, v = qkv()
    bias = torch.randn(H, T, T)
    m = variant("local", causal, window=T)
    torch.testing.assert_close(call(m, q, k, v), eager_attention(q, k, v, causal=causal), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(call(m, q, k, v, bias=bias), eager_attention(q, k, v, bias, causal), atol=1e-5,
                               rtol=1e-5)


def test_local_window_masks_far_keys():
    q, k, v = qkv()
    m = variant("local", False, window=2)
    v2 = v.clone()
    v2[:, :, 10:] += 1.0
    assert torch.allclose(call(m, q, k, v)[:, :, :7], call(m, q, k, v2)[:, :, :7])


def test_linformer_identity_projections_at_k_equals_n():
    q, k, v = qkv()
    m = variant("linformer", k=T)
    with torch.no_grad():
        m.E.copy_(torch.eye(T))
        m.F.copy_(torch.eye(T))
    torch.testing.assert_close(call(m, q, k, v), eager_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_probsparse_with_all_queries_equals_eager():
    q, k, v = qkv()
    torch.testing.assert_close(call(variant("probsparse", top_u=T), q, k, v), eager_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)


def test_probsparse_lazy_queries_get_mean_v():
    q, k, v = qkv()
    out = call(variant("probsparse", top_u=1), q, k, v)
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
    torch.testing.assert_close(call(variant("linear", causal), q, k, v), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("causal", [True, False])
def test_performer_equals_quadratic_form_of_its_features(causal):
    q, k, v = qkv()
    m = variant("performer", causal, features=32)
    ref = _feature_reference(m.phi(q), m.phi(k), v, causal)
    torch.testing.assert_close(call(m, q, k, v), ref, atol=1e-4, rtol=1e-4)


def test_performer_approximates_softmax_better_with_more_features():
    q, k, v = (x * 0.5 for x in qkv())
    exact = eager_attention(q, k, v)
    errs = [float((call(variant("performer", features=m, seed=1), q, k, v) - exact).abs().mean()) for m in (8, 2048)]
    assert errs[1] < errs[0] and errs[1] < 0.05


def test_orthogonal_features_are_orthogonal_within_blocks():
    from attnlab.attention import orthogonal_gaussian

    w = orthogonal_gaussian(D, D, torch.Generator().manual_seed(0))
    dirs = w / w.norm(dim=1, keepdim=True)
    torch.testing.assert_close(dirs @ dirs.T, torch.eye(D), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in ATTENTION.names() if ATTENTION[n].supports_causal])
def test_causal_variants_are_causal(name):
    q, k, v = qkv()
    m = variant(name, True, window=4)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 15:] += torch.randn_like(k2[:, :, 15:])
    v2[:, :, 15:] += 1.0
    a, b = call(m, q, k, v), call(m, q, k2, v2)
    torch.testing.assert_close(a[:, :, :15], b[:, :, :15])
    assert not torch.allclose(a[:, :, 15:], b[:, :, 15:])


@pytest.mark.parametrize("name", ["linformer", "fnet", "probsparse"])
def test_non_causal_variants_refuse_causal_use(name):
    with pytest.raises(ConfigError, match=f"model.attention = '{name}' is not causal"):
        variant(name, True)
    with pytest.raises(ConfigError, match="is not causal"):
        build_model(ModelConfig(mode="decoder", d_model=32, n_heads=4, attention=name), "none")


def test_fnet_is_real_part_of_2d_fft():
    m = variant("fnet")
    x = torch.randn(2, 6, 8)
    ref = np.fft.fft2(x.numpy(), axes=(-2, -1)).real
    np.testing.assert_allclose(m.mix(x).numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("name", VARIANTS)
def test_variants_in_a_model_have_gradients(name):
    attention = AttentionSpec.model_validate(name).adapt(window=4, k=8, features=16)
    cfg = ModelConfig(mode="encoder", d_model=32, n_layers=1, n_heads=4, d_ff=64, attention=attention, max_len=32)
    m = build_model(cfg, "sinusoidal")
    x = torch.randint(0, 256, (2, 20))
    m.loss(x, x).backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert m.blocks[0].attn.qkv.weight.grad is not None or name == "fnet"


def test_variant_refuses_an_encoding_it_cannot_carry():
    with pytest.raises(ConfigError, match="'performer' cannot carry a bias encoding .*accepts: none, additive, rotary"):
        build_model(ModelConfig(mode="encoder", d_model=32, n_heads=4, attention="performer"), "alibi")
    with pytest.raises(ConfigError, match="'fnet' cannot carry a rotary encoding"):
        build_model(ModelConfig(mode="encoder", d_model=32, n_heads=4, attention="fnet"), "rope")


@pytest.mark.parametrize("pe", ["alibi", "t5", "kerple"])
def test_flex_score_mod_with_non_contiguous_positions(pe):
    enc = build_encoding(pe, PEDims(H * D, H, D, True))
    pos = torch.randperm(200)[:T].sort().values  # randomized-PE style positions: gathers, not index arithmetic
    q, k, v = qkv()
    with torch.no_grad():
        ref = eager_attention(q, k, v, bias=enc.bias(pos, pos), causal=True)
        out = BACKENDS["flex"](q, k, v, causal=True, score_mod=score_mod_of(enc, pos, pos))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["local", "linformer", "linear", "performer", "probsparse", "combiner",
                                  "combiner_axial", "learned_kernel", "blockwise"])
def test_variants_ignore_padding_keys(name):
    """Padding appended to a sequence and marked as such leaves the outputs at the real positions unchanged."""
    t, extra = 20, 9
    q, k, v = qkv(t=t + extra)
    pad = torch.zeros(B, t + extra, dtype=torch.bool)
    pad[:, t:] = True
    pad[1, t - 3:] = True  # the second sequence is shorter
    kw = {"window": 4, "k": 8, "features": 32, "top_u": t + extra, "block": 6, "row": 6}
    m = variant(name, t=t + extra, **kw)
    with torch.no_grad():
        out = call(m, q, k, v, key_padding=pad)
        for i, n in ((0, t), (1, t - 3)):
            sl = slice(i, i + 1)
            ref_m = variant(name, t=t + extra, **{**kw, "top_u": n})
            if name == "linformer":  # same projection matrices E, F (seeded by the module's creation)
                ref_m.load_state_dict(m.state_dict())
            ref = call(ref_m, q[sl, :, :n], k[sl, :, :n], v[sl, :, :n])
            torch.testing.assert_close(out[sl, :, :n], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_bias_masks_keys_in_every_backend(backend):
    q, k, v = qkv()
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[0, 15:] = True
    from attnlab.attention import padding_bias

    with torch.no_grad():
        out = BACKENDS[backend](q, k, v, bias=padding_bias(pad, q.dtype))
    ref = eager_attention(q[:1, :, :, :], k[:1, :, :15], v[:1, :, :15])
    torch.testing.assert_close(out[:1], ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1:], eager_attention(q[1:], k[1:], v[1:]), atol=1e-5, rtol=1e-5)


def test_urpe_with_c_of_ones_is_ordinary_attention_and_c_is_toeplitz():
    """URPE (Luo et al. 2022): C = 1 gives softmax attention with the bias; C_ij depends on i - j only."""
    q, k, v = qkv()
    bias = torch.randn(H, T, T)
    m = variant("urpe", True)
    with torch.no_grad():
        torch.testing.assert_close(call(m, q, k, v, bias=bias), eager_attention(q, k, v, bias=bias, causal=True),
                                   atol=1e-5, rtol=1e-5)
        m.c_flat.copy_(torch.randn_like(m.c_flat))
    c = m.toeplitz(T, T, torch.device("cpu"))
    for d in (-3, 0, 5):
        diag = torch.diagonal(c, offset=d, dim1=-2, dim2=-1)  # (H, T - |d|)
        torch.testing.assert_close(diag, diag[:, :1].expand_as(diag))
    scores = (q @ k.transpose(-2, -1)) / D ** 0.5 + bias  # the definition: probabilities times C, then V
    p = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    with torch.no_grad():
        torch.testing.assert_close(call(m, q, k, v, bias=bias), torch.matmul(p * c, v), atol=1e-5, rtol=1e-5)


def test_key_value_attention_uses_keys_as_queries():
    q, k, v = qkv()
    m = variant("key_value")
    torch.testing.assert_close(call(m, q, k, v), eager_attention(k, k, v), atol=1e-5, rtol=1e-5)
    s = k @ k.transpose(-2, -1)
    torch.testing.assert_close(s, s.transpose(-2, -1))  # a symmetric score map


def test_key_value_grid_encoding_is_the_2d_sinusoid_of_the_official_code():
    """positional_encodings' PositionalEncoding2D with 10 channels: c = 6; channels 0-5 sin/cos of row i at
    frequencies 10000^(-0/6, -2/6, -4/6), channels 6-9 sin/cos of column j at the first two."""
    from attnlab.attention.variants.key_value import grid_encoding_2d

    g = grid_encoding_2d(7, 9, 10)
    assert g.shape == (7, 9, 10)
    f = torch.tensor([1.0, 10000 ** (-2 / 6), 10000 ** (-4 / 6)])
    i, j = 5, 3
    want = [math.sin(i * f[0]), math.cos(i * f[0]), math.sin(i * f[1]), math.cos(i * f[1]), math.sin(i * f[2]),
            math.cos(i * f[2]), math.sin(j * f[0]), math.cos(j * f[0]), math.sin(j * f[1]), math.cos(j * f[1])]
    torch.testing.assert_close(g[i, j], torch.tensor(want), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_key_value_with_2d_positions_equals_the_official_map(causal):
    """Borji's asymmetric KV: softmax(map_pos(k k^T / sqrt(d) + P)) V, map_pos a Linear(pos_dim -> 1)."""
    from attnlab.attention.variants.key_value import grid_encoding_2d

    q, k, v = qkv()
    m = variant("key_value", causal, pos_dim=10)
    with torch.no_grad():
        m.pos_bias.fill_(0.3)
    grid = grid_encoding_2d(T, T, 10)  # (T, T, 10)
    s = k @ k.transpose(-2, -1) / D ** 0.5  # (B, H, T, T)
    logits = (s[..., None] + grid) @ m.pos_weight + m.pos_bias  # (B, H, T, T)
    if causal:
        logits = logits.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    with torch.no_grad():
        out = call(m, q, k, v)
        torch.testing.assert_close(out, logits.softmax(-1) @ v, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(logits[0, 0], logits[0, 0].T)  # no longer symmetric
    loss = call(m, q, k, v).square().sum()
    loss.backward()
    assert m.pos_weight.grad is not None and m.pos_weight.grad.abs().sum() > 0


def test_key_value_2d_parameters_keep_their_init_in_a_model():
    """The model's N(0, 0.02) init of Linear layers leaves the map's Xavier-uniform weights alone."""
    from attnlab.model import ModelConfig, build_model

    torch.manual_seed(0)
    m = build_model(ModelConfig(d_model=32, n_heads=4, mode="encoder",
                                attention={"name": "key_value", "pos_dim": 10}), "sinusoidal")
    w = m.blocks[0].attn.attn.pos_weight
    assert w.abs().max() <= math.sqrt(6 / 11) and w.std() > 0.1


@pytest.mark.parametrize("causal", [True, False])
def test_learned_kernel_equals_quadratic_form_of_its_features(causal):
    q, k, v = qkv()
    m = variant("learned_kernel", causal, features=32, components=4)
    with torch.no_grad():  # a trained state: components apart from N(0, I)
        m.mu.normal_(0, 0.3), m.log_sigma.normal_(0, 0.2), m.logit_pi.normal_()
    ref = _feature_reference(m.phi(q), m.phi(k), v, causal)
    torch.testing.assert_close(call(m, q, k, v), ref, atol=1e-4, rtol=1e-4)


def test_learned_kernel_starts_as_positive_random_features_of_softmax():
    """At initialisation (mu = 0, sigma = 1): Performer's estimator with i.i.d. Gaussian features."""
    q, k, v = (x * 0.5 for x in qkv())
    exact = eager_attention(q, k, v)
    with torch.no_grad():
        errs = [float((call(variant("learned_kernel", features=m, components=2, seed=1), q, k, v) - exact)
                      .abs().mean()) for m in (8, 4096)]
    assert errs[1] < errs[0] and errs[1] < 0.05
    m = variant("learned_kernel", features=16, components=2)
    w = m.spectral_samples()
    torch.testing.assert_close(w, m.eps.reshape(-1, m.eps.shape[-1]))


def test_learned_kernel_learns_its_spectral_distribution():
    q, k, v = (x.requires_grad_() for x in qkv())
    m = variant("learned_kernel", True, features=16, components=2)
    call(m, q, k, v).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (m.mu, m.log_sigma, m.logit_pi))


def test_learned_kernel_components_must_divide_features():
    from attnlab.config import validate

    with pytest.raises(ConfigError, match="features = 10: must be a multiple of components = 4"):
        validate(ModelConfig, {"attention": {"name": "learned_kernel", "features": 10, "components": 4}})


@pytest.mark.parametrize("causal", [True, False])
def test_blockwise_equals_eager_attention_over_its_blocks(causal):
    """Sun et al.'s blockwise causal attention: the softmax over the keys of the query's block and the one before."""
    from attnlab.attention.variants.blockwise import blockwise_mask

    q, k, v = qkv(t=23)
    m = variant("blockwise", causal, t=23, block=5)
    keep = blockwise_mask(23, 23, 5, causal)
    for i in (0, 4, 5, 9, 10, 14, 22):  # block 0, block edges, the last (partial) block
        seen = {j for j in range(23) if j // 5 in (i // 5 - 1, i // 5) and (j <= i or not causal)}
        assert set(keep[i].nonzero().flatten().tolist()) == seen
    ref = eager_attention(q, k, v, bias=torch.zeros(23, 23).masked_fill(~keep, float("-inf")))
    torch.testing.assert_close(call(m, q, k, v), ref, atol=1e-5, rtol=1e-5)
    full = variant("blockwise", causal, t=23, block=23)  # one block holding everything: full attention
    torch.testing.assert_close(call(full, q, k, v), eager_attention(q, k, v, causal=causal), atol=1e-5, rtol=1e-5)


def _topk_reference(q, k, v, top_k, causal):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    kth = s.topk(top_k, dim=-1).values[..., -1:]
    return (s.masked_fill(s < kth, float("-inf")).softmax(-1)) @ v


@pytest.mark.parametrize("causal", [False, True])
def test_iceformer_exact_search_is_softmax_over_the_top_k_keys(causal):
    q, k, v = qkv(t=24)
    m = variant("iceformer", causal, t=24, top_k=6, search="exact")
    with torch.no_grad():
        got = call(m, q, k, v)
    torch.testing.assert_close(got, _topk_reference(q, k, v, 6, causal), atol=1e-5, rtol=1e-5)
    if causal:  # a query with at most 6 past keys sees all of them
        torch.testing.assert_close(got[:, :, :6], eager_attention(q, k, v, causal=True)[:, :, :6], atol=1e-5,
                                   rtol=1e-5)
    with torch.enable_grad():  # with gradients (training, fine-tuning) it is exact attention
        torch.testing.assert_close(call(m, q, k, v), eager_attention(q, k, v, causal=causal), atol=1e-5, rtol=1e-5)


def test_iceformer_hnsw_finds_the_largest_inner_products():
    from attnlab.attention.variants.iceformer import knn_keys

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(64, 16, generator=g), torch.randn(512, 16, generator=g) * torch.rand(512, 1, generator=g) * 2
    exact, approx = knn_keys(q, k, 8, "exact"), knn_keys(q, k, 8, "hnsw", ef_search=128)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 8 for a, b in zip(exact, approx)])
    assert recall > 0.9, recall  # the norm-augmented keys turn inner products into distances


def test_iceformer_is_causal_and_ignores_padding():
    q, k, v = qkv(t=30)
    m = variant("iceformer", True, t=30, top_k=4, block=8)
    later_k, later_v = k.clone(), v.clone()
    later_k[:, :, 20:] += 3.0
    later_v[:, :, 20:] += 3.0
    with torch.no_grad():
        a, b = call(m, q, k, v), call(m, q, later_k, later_v)
        exact = call(variant("iceformer", True, t=30, top_k=4, search="exact"), q, k, v)
    torch.testing.assert_close(a[:, :, :20], b[:, :, :20])  # no future key takes part in the search
    assert (a - exact).abs().mean() < 0.05  # on 30 keys HNSW finds (nearly) the exact top 4
    enc = variant("iceformer", False, t=30, top_k=4, search="exact")
    pad = torch.zeros(B, 30, dtype=torch.bool)
    pad[:, 25:] = True
    big_v = v.clone()
    big_v[:, :, 25:] = 1e6  # a selected padding key would show
    with torch.no_grad():
        out = call(enc, q, k * 1.0, big_v, key_padding=pad)
    assert out.abs().max() < 1e3


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block", [1, 40])
def test_combiner_limits_are_exact_attention(causal, block):
    """Ren et al.'s factorisation is exact when every block is one key, or one block holds everything."""
    q, k, v = qkv(t=21)
    m = variant("combiner", causal, t=21, block=block)
    torch.testing.assert_close(call(m, q, k, v), eager_attention(q, k, v, causal=causal), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("summary", ["max", "mean"])
def test_combiner_equals_its_definition(causal, summary):
    """Query i: its block's keys directly (up to i when causal), every other block (earlier when causal) as
    one key, the pooled keys, and one value, the values weighted by the pooled query's attention."""
    t, s = 14, 4
    q, k, v = qkv(t=t)
    m = variant("combiner", causal, t=t, block=s, summary=summary)
    pool = (lambda x: x.amax(-2)) if summary == "max" else (lambda x: x.mean(-2))
    scale = D ** -0.5
    ref = torch.zeros_like(q)
    for i in range(t):
        r = i // s
        direct = [j for j in range(r * s, min(t, r * s + s)) if not causal or j <= i]
        logits, values = [(q[:, :, i] * k[:, :, j]).sum(-1) * scale for j in direct], [v[:, :, j] for j in direct]
        for r2 in range(-(-t // s)):
            if r2 == r or (causal and r2 > r):
                continue
            members = list(range(r2 * s, min(t, r2 * s + s)))
            qk, kk = pool(q[:, :, members]), pool(k[:, :, members])  # (B, H, D)
            w = ((qk[:, :, None] * k[:, :, members]).sum(-1) * scale).softmax(-1)  # (B, H, J)
            logits.append((q[:, :, i] * kk).sum(-1) * scale)
            values.append((w[..., None] * v[:, :, members]).sum(-2))
        p = torch.stack(logits, -1).softmax(-1)
        ref[:, :, i] = (p[..., None] * torch.stack(values, -2)).sum(-2)
    torch.testing.assert_close(call(m, q, k, v), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_combiner_has_full_attention_support(causal):
    """Every key a query may see reaches it, directly or through its block's abstraction."""
    q, k, v = qkv(t=23)
    v = v.clone().requires_grad_()
    m = variant("combiner", causal, t=23, block=4)
    for i in (0, 5, 22):
        g, = torch.autograd.grad(call(m, q, k, v)[:, :, i].sum(), v)
        reached = g.abs().sum(dim=(0, 1, 3)) > 0  # (T,)
        want = torch.arange(23) <= i if causal else torch.ones(23, dtype=torch.bool)
        assert torch.equal(reached, want), (i, reached)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("row", [1, 40])
def test_combiner_axial_limits_are_exact_attention(causal, row):
    """Rows of one position, or one row holding everything: Combiner-Axial is exact softmax attention."""
    q, k, v = qkv(t=21)
    m = variant("combiner_axial", causal, t=21, row=row)
    torch.testing.assert_close(call(m, q, k, v), eager_attention(q, k, v, causal=causal), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("summary", ["wsum", "key"])
def test_combiner_axial_equals_its_definition(causal, summary):
    """Query (r, c): its row's keys directly (up to c when causal), every other row r' (earlier when causal)
    as one key and one value at (r', c): the row's values (and keys, wsum) averaged by (r', c)'s attention."""
    t, s = 14, 4  # rows [0..3], [4..7], [8..11], [12, 13]
    q, k, v = qkv(t=t)
    m = variant("combiner_axial", causal, t=t, row=s, summary=summary)
    scale = D ** -0.5
    ref = torch.zeros_like(q)
    for i in range(t):
        r, c = divmod(i, s)
        direct = [j for j in range(r * s, min(t, r * s + s)) if not causal or j <= i]
        logits, values = [(q[:, :, i] * k[:, :, j]).sum(-1) * scale for j in direct], [v[:, :, j] for j in direct]
        for r2 in range(-(-t // s)):
            if r2 == r or (causal and r2 > r):
                continue
            members = list(range(r2 * s, min(t, r2 * s + s)))
            at = r2 * s + c  # the abstraction's position; beyond the sequence: a zero query
            qa = q[:, :, at] if at < t else torch.zeros_like(q[:, :, 0])
            w = torch.stack([(qa * k[:, :, j]).sum(-1) * scale for j in members], -1).softmax(-1)  # (B, H, J)
            key = (w[..., None] * k[:, :, members]).sum(-2) if summary == "wsum" or at >= t else k[:, :, at]
            logits.append((q[:, :, i] * key).sum(-1) * scale)
            values.append((w[..., None] * v[:, :, members]).sum(-2))
        p = torch.stack(logits, -1).softmax(-1)  # (B, H, n)
        ref[:, :, i] = (p[..., None] * torch.stack(values, -2)).sum(-2)
    torch.testing.assert_close(call(m, q, k, v), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_combiner_axial_has_full_attention_support(causal):
    """Every key a query may see reaches it, directly in its row or through another row's abstraction."""
    q, k, v = qkv(t=23)
    v = v.clone().requires_grad_()
    m = variant("combiner_axial", causal, t=23, row=5)
    for i in (0, 7, 22):
        g, = torch.autograd.grad(call(m, q, k, v)[:, :, i].sum(), v)
        reached = g.abs().sum(dim=(0, 1, 3)) > 0  # (T,)
        want = torch.arange(23) <= i if causal else torch.ones(23, dtype=torch.bool)
        assert torch.equal(reached, want), (i, reached)


@pytest.mark.parametrize("causal", [True, False])
def test_ecoformer_weighs_keys_by_agreeing_bits(causal):
    """EcoFormer: attention weights proportional to the number of agreeing bits of b-bit codes (linear time)."""
    q, k, v = qkv()
    m = variant("ecoformer", causal, bits=8, anchors=16)
    hq, hk = m.codes(q), m.codes(k)
    assert set(hq.unique().tolist()) <= {-1.0, 1.0} and hq.shape[-1] == 8
    agree = (hq @ hk.transpose(-1, -2) + 8) / 2  # (B, H, T, T) in 0..8
    if causal:
        agree = agree.tril()
    ref = (agree / agree.sum(-1, keepdim=True).clamp_min(1e-30)) @ v
    torch.testing.assert_close(call(m, q, k, v), ref, atol=1e-5, rtol=1e-5)


def test_ecoformer_learns_its_hash_from_the_attention_map():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, H, 32, D, generator=g)
    k = q + 0.3 * torch.randn(2, H, 32, D, generator=g)  # each query attends most to its own key
    m = variant("ecoformer", False, bits=16, anchors=32, pairs=2, fit_steps=150)

    def gap():
        a = (m.codes(q) @ m.codes(k).transpose(-1, -2)) / 16  # (B, H, T, T) code affinity
        eye = torch.eye(32, dtype=torch.bool)
        return float(a[..., eye].mean() - a[..., ~eye].mean())

    before = gap()
    loss = m.fit_hash(q, k, causal=False)
    assert gap() > before + 0.1 and gap() > 0.3, (before, gap(), loss)


def test_ecoformer_refits_only_between_training_passes():
    q, k, v = qkv()
    m = variant("ecoformer", True, refit_every=2)
    first = call(m, q, k, v)  # pass 1: the random hash
    torch.testing.assert_close(call(m, q, k, v), first)  # pass 2 uses it too, then fits for pass 3
    assert not torch.allclose(call(m, q, k, v), first)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(call(m, q, k, v), call(m, q, k, v))  # inference: no refits
