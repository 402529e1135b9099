"""Notebook 08's library: passkey documents and their scoring, loss by position, the transformers path
(local save / load, rope_parameters scalings, offline errors), its claims on constructed results."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from attnlab import hf
from attnlab import passkey as P
from attnlab.claims import CLAIMS
from attnlab.data import decode
from attnlab.errors import ConfigError
from attnlab.experiments import long_context as lc

FMT = P.PasskeyFormat(digits=4)


@pytest.mark.parametrize("length", [300, 301, 777])
@pytest.mark.parametrize("depth", [0.0, 0.3, 1.0])
def test_document_has_exact_length_and_the_key_at_its_depth(length, depth):
    s = P.make_sample(FMT, length, depth, np.random.default_rng(0))
    text = decode(s.tokens)
    assert s.tokens.numel() == length and len(s.key) == 4 and s.key[0] != "0"
    assert decode(s.tokens[s.answer]) == " " + s.key and text.endswith(FMT.question + " " + s.key)
    info = FMT.info.format(key=s.key)
    assert text.startswith(FMT.intro + "\n") and text.count(info) == 1
    where = text.index(info) - len(FMT.intro) - 2  # filler bytes before the information line
    n_fill = length - P.fixed_tokens(FMT)
    assert abs(where - depth * n_fill) <= 1


def test_too_short_a_document_is_refused():
    with pytest.raises(ValueError, match="fixed tokens"):
        P.make_sample(FMT, P.fixed_tokens(FMT) - 1, 0.5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="train.seq_len = 40"):
        P.check_length(FMT, 40, "train.seq_len")


def test_documents_are_the_same_for_every_model_and_differ_by_length():
    a = P.samples(FMT, 400, [0.0, 1.0], 3, 0)
    b = P.samples(FMT, 400, [0.0, 1.0], 3, 0)
    c = P.samples(FMT, 800, [0.0, 1.0], 3, 0)
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a, b))
    assert [x.key for x in a] != [x.key for x in c]
    assert [x.depth for x in a] == [0.0] * 3 + [1.0] * 3


class Successor(nn.Module):
    """A fake LM: after 's' a space, after a space '1', after a digit d the digit d + 1 (else 'x')."""

    def __init__(self) -> None:
        super().__init__()
        table = torch.full((256,), ord("x"))
        table[ord("s")] = ord(" ")
        table[ord(" ")] = ord("1")
        for d in range(9):
            table[ord("0") + d] = ord("0") + d + 1
        self.register_buffer("table", table)
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.table[x], 256).float() + self.w  # (B, T, 256)


@pytest.mark.parametrize("key, right", [("1234", True), ("1235", False), ("5234", False), ("1278", False)])
def test_teacher_forced_score_equals_greedy_decoding(key, right):
    fmt = P.PasskeyFormat(intro="", digits=4)
    s = P.make_sample(fmt, 200, 0.5, np.random.default_rng(0))
    ids = s.tokens.clone()
    ids[s.answer] = torch.tensor(list((" " + key).encode()))
    doc = P.Sample(ids, s.answer, key, 0.5)
    model = Successor()
    greedy = P.generate_greedy(model, ids[: s.answer.start], s.answer.stop - s.answer.start)
    assert (bytes(greedy.tolist()).decode() == " " + key) is right
    assert P.score(model, [doc]) == [right]


def test_training_batches_mix_passkey_documents_and_corpus_text():
    corpus = torch.tensor(list(b"def f(x):\n    return x + 1\n" * 400), dtype=torch.uint8)
    fmt = P.PasskeyFormat(intro="", digits=3)
    for frac, lo, hi in ((1.0, 64, 64), (0.5, 16, 48)):
        x, y, _ = P.training_batches(fmt, corpus, 64, 120, frac)(0, torch.Generator().manual_seed(1))
        assert x.shape == y.shape == (64, 120) and torch.equal(x[:, 1:], y[:, :-1])
        n = sum("What is the pass key? The pass key is" in decode(torch.cat([r, t[-1:]])) for r, t in zip(x, y))
        assert lo <= n <= hi


def test_loss_by_position_is_the_mean_loss_at_each_position():
    torch.manual_seed(0)
    from attnlab.model import ModelConfig, build_model

    model = build_model(ModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32), "rope").eval()
    data = torch.randint(0, 256, (5000,), dtype=torch.uint8)
    per = lc.loss_by_position(model, data, 64, 4, 64, batch_tokens=128)
    binned = lc.loss_by_position(model, data, 64, 4, 8)
    starts = torch.linspace(0, 5000 - 64 - 1, 4).round().long()
    w = torch.stack([data[s:s + 65] for s in starts]).long()
    ce = torch.nn.functional.cross_entropy(model(w[:, :-1]).transpose(1, 2), w[:, 1:], reduction="none")
    assert np.allclose(per, (ce.mean(0) / np.log(2)).detach().numpy(), atol=1e-5)
    assert np.allclose(binned, per.reshape(8, 8).mean(1), atol=1e-6)


# ----------------------------------------------------------------------------- the transformers path


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """A byte-level LlamaForCausalLM trained two steps and saved with save_pretrained."""
    from attnlab.train import TrainConfig, train

    config = hf.byte_llama_config(32, 1, 2, 64, 64)
    folder = tmp_path_factory.mktemp("hf") / "llama"

    def fit(model, checkpoint):
        torch.manual_seed(0)
        data = torch.randint(0, 256, (4000,), dtype=torch.uint8)
        from attnlab.train import lm_batches

        train(model, lm_batches(data, 4, 64), TrainConfig(steps=2, batch_size=4, seq_len=64, warmup=1),
              checkpoint=checkpoint, progress=False)

    return hf.train_byte_llama(config, folder, fit)


def test_local_llama_loads_back_with_from_pretrained(llama_folder):
    model, codec = hf.load(str(llama_folder))
    assert codec is P.byte_codec and type(model.hf).__name__ == "LlamaForCausalLM"
    assert (llama_folder / "model.safetensors").exists() and not llama_folder.with_name("llama.work").exists()
    x = torch.randint(0, 256, (2, 40))
    again, _ = hf.load(str(llama_folder))
    assert torch.equal(model(x), again(x))  # the saved weights, not a fresh init
    assert hf.train_byte_llama(None, llama_folder, None) == llama_folder  # a finished folder is not retrained


@pytest.mark.parametrize("method", ["linear", "dynamic", "yarn", "llama3"])
def test_scaling_goes_through_transformers_rope_parameters(llama_folder, method):
    from attnlab.positional import PEDims, build_encoding

    model, _ = hf.load(str(llama_folder), method, 4.0, 64)
    rp = model.config.rope_parameters
    assert rp["rope_type"] == method and rp["factor"] == 4.0
    ours = build_encoding({"name": method, "factor": 4.0, "original_max_len": 64}, PEDims(32, 2, 16, causal=True))
    inv = model.hf.model.rotary_emb.inv_freq
    assert torch.allclose(inv.float(), ours.inv_freq.float(), rtol=1e-6)  # the same frequencies as the zoo's
    native, _ = hf.load(str(llama_folder))
    x = torch.randint(0, 256, (1, 48))
    same = torch.allclose(model(x), native(x), atol=1e-5)
    assert same is (method == "dynamic")  # dynamic NTK changes nothing within the training length


def test_model_spec_errors_are_one_line_with_the_choices(tmp_path):
    with pytest.raises(ValidationError, match="valid choices: local, hf:NAME_OR_PATH"):
        lc.LongContextConfig.model_validate({"model": "gpt2", "train": {"seq_len": 512}})
    assert lc.LongContextConfig.model_validate({"model": f"hf:{tmp_path}", "train": {"seq_len": 512}}).hf == f"hf:{tmp_path}"
    with pytest.raises(ConfigError, match="no config.json"):
        hf.resolve(f"hf:{tmp_path}")
    with pytest.raises(ConfigError, match="no such folder"):
        hf.resolve("hf:./missing/folder")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "attnlab", "run", "--profile", "smoke", "--only", "08", *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, needle", [
    (["--set", "model=hf:attnlab-test/not-a-cached-model"], "not in the local Hugging Face cache"),
    (["--set", "train.seq_len=8"], "train.seq_len = 8: a passkey document of this format needs at least"),
    (["--set", "passkey.filler_source=web"], "valid choices: repeat, corpus"),
])
def test_bad_input_exits_2_in_one_line_before_any_kernel(tmp_path, args, needle):
    out = tmp_path / "run"
    r = _run("--out", str(out), *args, env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [x for x in r.stderr.strip().splitlines() if x]
    assert len(lines) == 1 and needle in lines[0], lines
    assert not out.exists()


def test_hub_download_path():
    """A hub model through the same code: runs where the hub is reachable, skips cleanly offline."""
    try:
        source = hf.resolve("hf:hf-internal-testing/tiny-random-LlamaForCausalLM")
    except ConfigError as e:
        pytest.skip(f"offline and not cached: {e}")
    model, codec = hf.load(source)
    ids = codec("The pass key is 123.")
    assert model(torch.tensor([ids])).shape[:2] == (1, len(ids))


# ----------------------------------------------------------------------------- claims on constructed results


def _frame(acc: dict[tuple[str, bool, int], float], seeds=(0, 1, 2), docs=40, depth_zero: float | None = None):
    rng = np.random.default_rng(0)
    rows = []
    for (method, ft, n), p in acc.items():
        for seed in seeds:
            for i in range(docs):
                depth = 0.0 if i % 2 == 0 else 1.0
                q = depth_zero if (depth_zero is not None and depth == 0.0 and n > 128) else p
                rows.append({"experiment": "passkey_sample", "encoding": method.split()[0], "method": method,
                             "finetuned": ft, "seed": seed, "length": n, "depth": depth, "sample": i,
                             "correct": float(rng.random() < q)})
    return pd.DataFrame(rows)


def _verdict(cid, df, profile="cpu"):
    return CLAIMS[cid].evaluate(df, profile)


def test_rope_collapse_needs_retrieval_at_L_first():
    good = _frame({("rope", False, 128): 1.0, ("rope", False, 512): 0.0})
    assert _verdict("passkey_rope_collapses_beyond_L", good)["verdict"] == "reproduced"
    flat = _frame({("rope", False, 128): 1.0, ("rope", False, 512): 0.9})
    assert _verdict("passkey_rope_collapses_beyond_L", flat)["verdict"] == "not reproduced"
    unfit = _frame({("rope", False, 128): 0.3, ("rope", False, 512): 0.0})
    r = _verdict("passkey_rope_collapses_beyond_L", unfit)
    assert r["verdict"] == "inconclusive" and "does not retrieve at L" in r["note"]
    assert _verdict("passkey_rope_collapses_beyond_L", good, "smoke")["verdict"] == "inconclusive"


def test_pi_and_yarn_and_alibi_claims_read_their_own_columns():
    base = {("rope", False, 128): 1.0, ("rope", False, 256): 0.1, ("dynamic", False, 256): 0.7,
            ("yarn", False, 256): 0.8, ("linear", True, 256): 1.0, ("rope", True, 256): 0.4}
    df = _frame(base)
    assert _verdict("passkey_yarn_dynamic_without_finetune", df)["verdict"] == "reproduced"
    assert _verdict("passkey_pi_after_finetune", df)["verdict"] == "reproduced"
    worse = _frame({**base, ("linear", True, 256): 0.4, ("rope", True, 256): 1.0})
    assert _verdict("passkey_pi_after_finetune", worse)["verdict"] == "not reproduced"
    far = _frame({("alibi", False, 128): 1.0, ("alibi", False, 1024): 1.0}, depth_zero=0.0)
    assert _verdict("passkey_alibi_far_key_unreachable", far)["verdict"] == "reproduced"
    reach = _frame({("alibi", False, 128): 1.0, ("alibi", False, 1024): 1.0}, depth_zero=1.0)
    assert _verdict("passkey_alibi_far_key_unreachable", reach)["verdict"] == "not reproduced"
    two = _frame({("alibi", False, 128): 1.0, ("alibi", False, 1024): 0.0}, seeds=(0, 1))
    assert "a verdict needs at least 3" in _verdict("passkey_alibi_far_key_unreachable", two)["note"]
