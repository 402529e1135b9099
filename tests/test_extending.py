"""The README's own encoding and attention variant, registered at test time: one class each, usable from
--set, a preset, notebooks 02-05 and 08 and the attention benchmark with no other edit."""

import re
from pathlib import Path

import pytest
import torch

from attnlab.attention import ATTENTION, AttnDims, build_attention, eager_attention
from attnlab.config import ConfigError, parse_overrides
from attnlab.experiments import load
from attnlab.model import ModelConfig, build_model
from attnlab.positional import ENCODINGS, PEDims, build_encoding

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def extended():
    """Run the README's code blocks (as the files they name would be imported), then unregister them."""
    blocks = readme_blocks()
    assert len(blocks) == 2
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md block {i + 1}", "exec"), {"__name__": f"readme_block_{i}"})
    yield
    ENCODINGS.unregister("decay")
    ATTENTION.unregister("strided")


def test_the_encoding_has_its_defining_property(extended):
    pe = build_encoding({"name": "decay", "slope": 0.5}, PEDims(16, 2, 8))
    pos = torch.arange(6)
    b = pe.bias(pos, pos)
    assert b.shape == (2, 6, 6) and float(b[0, 5, 1]) == -2.0
    torch.testing.assert_close(pe.bias(pos + 9, pos + 9), b)  # translation invariant


@pytest.mark.parametrize("causal", [True, False])
def test_the_variant_equals_eager_attention_at_stride_1_and_is_causal(extended, causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 12, 8, generator=g) for _ in range(3))
    one = build_attention({"name": "strided", "stride": 1}, AttnDims(2, 8, 12, causal))
    torch.testing.assert_close(one(q, k, v, causal=causal), eager_attention(q, k, v, causal=causal))
    three = build_attention({"name": "strided", "stride": 3}, AttnDims(2, 8, 12, causal))
    v2 = v.clone()
    v2[:, :, 1] += 1.0  # key 1 is seen only by queries 1, 4, 7, 10 (and, bidirectional, none before it)
    diff = (three(q, k, v2, causal=causal) - three(q, k, v, causal=causal)).abs().amax(dim=(0, 1, 3)) > 0
    assert diff.nonzero().flatten().tolist() == [1, 4, 7, 10]


def test_parameters_are_validated_like_the_built_in_ones(extended):
    with pytest.raises(ConfigError, match=r"encodings\[1\].slope = -1: must be > 0"):
        load("02", "smoke", parse_overrides(["encodings=[alibi, {name: decay, slope: -1}]"]))
    with pytest.raises(ConfigError, match=r"model.attention.strid: unknown parameter; valid choices: stride"):
        load("02", "smoke", parse_overrides(["model.attention=strided", "model.attention.strid=2"]))
    cfg = load("02", "smoke", parse_overrides(["model.attention.name=strided", "model.attention.stride=2"]))
    assert cfg.model.attention.name == "strided" and cfg.model.attention.params.stride == 2


def test_notebook_02_from_set(extended):
    from attnlab.experiments import lm_extrapolation as lm

    cfg = load("02", "smoke", parse_overrides([
        "encodings=[alibi, {name: decay, slope: 0.05}]", "model.attention={name: strided, stride: 2}",
        "speed_rounds=1", "train.steps=3", "eval.lengths=[32, 64]", "eval.sliding_stride=0"]))
    res = lm.run(cfg, progress=False)
    ev = res[(res["experiment"] == "eval") & (res["encoding"] == "decay")]
    assert len(ev) == 2 * len(cfg.seeds) and ev["bpb"].notna().all()
    assert set(res.loc[res["experiment"] == "speed", "encoding"]) == {"alibi", "decay"}


def test_notebook_03_from_a_preset(extended, tmp_path, monkeypatch):
    from attnlab.experiments import algorithmic as alg

    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "03_algorithmic_length_generalization.yaml").write_text(
        "smoke:\n  encoder_tasks: [parity_check]\n  encoder_pes: [decay]\n  randomized: [false]\n"
        "  decoder_tasks: [copy]\n  decoder_pes: [decay]\n  train_max_length: 4\n  test_max_length: 6\n"
        "  test_lengths: 1\n  decoder_train_max_length: 3\n  decoder_test_max_length: 5\n  eval_samples: 4\n"
        "  jobs: 1\n  model: {d_model: 16, n_layers: 1, n_heads: 2, d_ff: 32, attention: {name: strided, stride: 2}}\n"
        "  train: {steps: 2, batch_size: 4, checkpoint_every: 2}\n"
        "  attention_variants: [{name: strided, stride: 2}]\n  attention_tasks: [parity_check]\n"
        "  attention_pe: decay\n")
    monkeypatch.setenv("ATTNLAB_NOTEBOOKS", str(tmp_path))
    cfg = load("03", "smoke")
    assert cfg.encoder_pes == ("decay",) and cfg.model.attention.params.stride == 2
    res = alg.run(cfg, progress=False)
    assert set(res["pe"]) == {"decay"} and (res["status"] == "ok").all()
    assert set(res.loc[res["experiment"] == "attention", "attention"]) == {"strided(stride=2)"}


def test_notebook_04_times_every_registered_attention(extended):
    from attnlab.experiments import attention_speed as sp

    cfg = load("04", "cpu")  # its preset names no variants: the default is every registered one
    assert "strided" in [v.name for v in cfg.variants]
    cfg = load("04", "smoke", {"lengths": [32, 64], "repeats": 1, "warmup": 0, "bias_backends": [],
                               "variants": ["sdpa", {"name": "strided", "stride": 2}]})
    res = sp.run(cfg, progress=False)
    t = res[(res["experiment"] == "timing") & (res["variant"] == "strided")]
    assert len(t) == 4 and (t["status"] == "ok").all() and (t["time_s"] > 0).all()


def test_notebook_05_from_set(extended):
    from attnlab.experiments import listops_accuracy as lo

    cfg = load("05", "smoke", parse_overrides(["variants=[sdpa, {name: strided, stride: 2}]", "train.steps=2",
                                                "n_train=16", "n_test=16"]))
    res = lo.run(cfg, progress=False)
    acc = res[res["experiment"] == "accuracy"].set_index("attention")
    assert {"sdpa", "strided"} <= set(acc.index) and acc.loc["strided", "accuracy"] >= 0


def test_notebook_08_from_set(extended):
    from attnlab.experiments import long_context as lc

    cfg = load("08", "smoke", parse_overrides([
        "encodings=[{name: decay, slope: 0.05}]", "model.attention={name: strided, stride: 2}", "train.steps=2",
        "multiples=[1, 2]", "depths=[0.0]", "samples=2"]))
    res = lc.run_passkey(cfg, progress=False)
    s = res[res["experiment"] == "passkey_sample"]
    assert set(s["method"]) == {"decay"} and len(s) == 2 * 2 * len(cfg.seeds)


def test_the_variant_and_the_encoding_train_in_a_model(extended):
    m = build_model(ModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32,
                                attention={"name": "strided", "stride": 2}), {"name": "decay", "slope": 0.2})
    x = torch.randint(0, 256, (2, 10))
    m.loss(x, x).backward()
    assert m.embed.weight.grad is not None and torch.isfinite(m.embed.weight.grad).all()


def test_every_file_of_the_zoo_is_registered():
    """positional/ and attention/variants/ import every file they hold: one new file is all it takes."""
    import attnlab.attention.variants as variants
    import attnlab.positional as positional

    for pkg, registry in ((positional, ENCODINGS), (variants, ATTENTION)):
        folder = Path(pkg.__file__).parent
        files = {p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "base")}
        owners = {cls.__module__.rsplit(".", 1)[-1] for _, cls in registry.items()}
        assert files <= owners, f"{folder}: {sorted(files - owners)} register nothing"
