"""Notebook 07: inference-time fixes beyond the training length.

(a) Chiang & Cholak 2022: log-length scaling of attention logits on FIRST and PARITY;
(b) Chi et al. 2023 (attention alignment): rescale logits beyond L so that attention entropy
    matches its value at L, for the T5-bias and ALiBi models of notebook 02;
(c) RoPE context extension at inference (position interpolation, dynamic NTK, YaRN, Llama 3),
    inverse frequencies from transformers' ROPE_INIT_FUNCTIONS, on notebook 02's RoPE model,
    without and with a short fine-tune at 2L.
"""

from __future__ import annotations

import copy
from typing import Annotated

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from .. import analysis as A
from ..claims import Measured, claim, select
from ..config import Config, one_of, replace
from ..data import load_corpus, random_batch
from ..evaluate import nonoverlapping
from ..model import ModelConfig, build_model
from ..positional import PEDims, build_encoding
from ..tasks.base import get_task
from ..train import TrainConfig, lm_batches, train, train_or_load
from . import lm_extrapolation as lm
from .algorithmic import Layout, _rng, _score

NAME = "07_attention_scaling_and_rope_extension"
ROPE_METHODS = ("rope", "linear", "dynamic", "yarn", "llama3")


class ExtensionConfig(Config):
    """Part (a) trains its own small models; parts (b) and (c) reuse notebook 02's models (same profile)."""

    cc_tasks: tuple[one_of(("first", "parity_check")), ...] = ("first", "parity_check")
    cc_train_max_length: int = Field(100, ge=2, description="Chiang & Cholak: train on n <= 100")
    cc_test_lengths: tuple[Annotated[int, Field(ge=1)], ...] = (100, 200, 500, 1000)
    cc_model: ModelConfig = Field(default_factory=lambda: ModelConfig(mode="encoder", d_model=16, n_layers=2,
                                                                      n_heads=1, d_ff=32, max_len=4096))
    cc_train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=2000, batch_size=32, lr=3e-3, warmup=100,
                                                                       weight_decay=0.0, checkpoint_every=500))
    cc_eval_samples: int = Field(256, ge=1)
    align_encodings: tuple[one_of(("t5", "alibi", "kerple", "fire")), ...] = ("t5", "alibi")
    align_sequences: int = Field(8, ge=1, description="windows used to match attention entropy")
    rope_methods: tuple[one_of(ROPE_METHODS), ...] = ROPE_METHODS
    finetune_steps: int = Field(100, ge=0, description="fine-tune at 2L for this many steps (0: skip)")
    finetune_lr: float = Field(2e-4, gt=0)
    max_tokens: int = Field(16384, ge=1, description="tokens scored per evaluation length")


# ----------------------------------------------------------------------------- (a) log-length scaling


def run_cc(cfg: ExtensionConfig, progress: bool = True) -> pd.DataFrame:
    """FIRST / PARITY with and without log-length scaling: accuracy by test length."""
    rows = []
    for name in cfg.cc_tasks:
        task = get_task(name)
        layout = Layout("encoder", task, prefix_tape=True)  # read at position 0, as Chiang & Cholak
        mcfg = replace(cfg.cc_model, vocab_size=layout.vocab_size)
        for scaled in (False, True):
            mcfg = replace(mcfg, log_length_scaling=scaled)
            pe = "sinusoidal"

            def batch_fn(step: int, gen: torch.Generator, layout: Layout = layout):  # noqa: ANN202
                rng = _rng(gen)
                n = int(rng.integers(1, cfg.cc_train_max_length + 1))
                return layout.batch(n, cfg.cc_train.batch_size, rng)

            torch.manual_seed(cfg.cc_train.seed)
            model, tr = train_or_load(build_model(mcfg, pe), batch_fn, cfg.cc_train, mcfg, pe,
                                      {"task": name, "n_train": cfg.cc_train_max_length, "readout": "first"},
                                      progress=progress, desc=f"{name} {'log n' if scaled else 'plain'}")
            for n in cfg.cc_test_lengths:
                rows.append({"experiment": "log_scaling", "task": name, "scaled": scaled, "length": n,
                             "accuracy": _score(model, layout, n, cfg.cc_eval_samples, 0),
                             "final_loss": tr.losses[-1] if tr.losses else float("nan")})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- (b) temperature alignment


def run_alignment(cfg: ExtensionConfig, profile: str, progress: bool = True) -> pd.DataFrame:
    """bpb by length for bias-PE models of notebook 02, with and without entropy-matched temperature."""
    c02 = lm.load_config(profile)
    corpus = load_corpus(c02.data)
    L = c02.train.seq_len
    g = torch.Generator().manual_seed(0)
    x_l, _ = random_batch(corpus.valid, cfg.align_sequences, L, g)
    rows = []
    for enc in cfg.align_encodings:
        model = lm.train_one(c02, corpus, lm.find(c02, enc), progress)[0]
        for n in c02.lengths:
            x_n, _ = random_batch(corpus.valid, max(1, cfg.align_sequences * L // n), n, g)
            s = 1.0 if n <= L else A.align_temperature(model, x_l, x_n)
            bpb = {}
            for aligned, scale in ((False, 1.0), (True, s)):
                if scale not in bpb:  # at or below L the aligned model is the unaligned one: evaluate once
                    bpb[scale] = nonoverlapping(model, corpus.test, n, cfg.max_tokens, logit_scale=scale,
                                                segment=max(c02.lengths))["bpb"]
                rows.append({"experiment": "alignment", "encoding": enc, "aligned": aligned, "length": n,
                             "scale": scale, "bpb": bpb[scale]})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- (c) RoPE extension


def with_encoding(model: torch.nn.Module, method: str, factor: float, original: int) -> torch.nn.Module:
    """The same weights with the RoPE variant `method` (scaling `factor` over the training length)."""
    m = copy.copy(model)
    m._modules = dict(model._modules)  # a new module table: the original keeps its own encoding
    d = model.cfg.d_model // model.cfg.n_heads
    spec = {"name": method} if method == "rope" else {"name": method, "factor": max(1.0, factor),
                                                         "original_max_len": original}
    m.pe = build_encoding(spec, PEDims(model.cfg.d_model, model.cfg.n_heads, d, causal=True))
    return m


def run_rope(cfg: ExtensionConfig, profile: str, progress: bool = True) -> pd.DataFrame:
    """bpb at L..16L of notebook 02's RoPE model under each extension method, before and after fine-tuning."""
    c02 = lm.load_config(profile)
    corpus = load_corpus(c02.data)
    L = c02.train.seq_len
    base = lm.train_one(c02, corpus, lm.find(c02, "rope"), progress)[0]
    rows = []

    def evaluate(model: torch.nn.Module, method: str, finetuned: bool, min_factor: float) -> None:
        for n in c02.lengths:
            m = with_encoding(model, method, max(min_factor, n / L), L)
            rows.append({"experiment": "rope_extension", "method": method, "finetuned": finetuned, "length": n,
                         "bpb": nonoverlapping(m, corpus.test, n, cfg.max_tokens, segment=max(c02.lengths))["bpb"]})

    for method in cfg.rope_methods:
        evaluate(base, method, False, 1.0)
        if cfg.finetune_steps:
            tuned = copy.deepcopy(with_encoding(base, method, 2.0, L))
            tcfg = replace(c02.train, steps=cfg.finetune_steps, lr=cfg.finetune_lr, warmup=min(10, cfg.finetune_steps),
                           seq_len=2 * L, batch_size=max(1, c02.train.batch_size // 2), min_lr_ratio=1.0)
            train(tuned, lm_batches(corpus.train, tcfg.batch_size, tcfg.seq_len), tcfg, progress=progress,
                  desc=f"fine-tune {method} at 2L")
            evaluate(tuned, method, True, 2.0)
    return pd.DataFrame(rows)


def run(cfg: ExtensionConfig, profile: str, progress: bool = True) -> pd.DataFrame:
    return pd.concat([run_cc(cfg, progress), run_alignment(cfg, profile, progress), run_rope(cfg, profile, progress)],
                     ignore_index=True)


# ----------------------------------------------------------------------------- claims


def _cc(df: pd.DataFrame, task: str, scaled: bool) -> float:
    r = select(df, experiment="log_scaling", task=task, scaled=scaled)
    return float(r.sort_values("length")["accuracy"].iloc[-1]) if len(r) else float("nan")


@claim("log_scaling_first", notebook=NAME, paper="Chiang & Cholak 2022, sec. 5", min_profile="cpu",
       statement="with log-length scaling, a Transformer trained on FIRST at n <= 100 generalizes to n = 1000",
       paper_value="scaled model keeps ~100% accuracy at n = 1000; unscaled degrades",
       threshold="accuracy at the longest test length >= 0.9 with scaling, and above the unscaled model")
def _first(df: pd.DataFrame) -> Measured:
    s, u = _cc(df, "first", True), _cc(df, "first", False)
    if np.isnan(s) or np.isnan(u):
        return Measured("no data", None)
    return Measured(f"scaled {100 * s:.1f}%, unscaled {100 * u:.1f}%", s >= 0.9 and s > u)


@claim("log_scaling_parity", notebook=NAME, paper="Chiang & Cholak 2022, sec. 5", min_profile="cpu",
       statement="with log-length scaling, PARITY trained at n <= 100 generalizes to n = 1000",
       paper_value="an exact construction exists; learning it is reported as hard",
       threshold="accuracy at the longest test length >= 0.9 with scaling")
def _parity(df: pd.DataFrame) -> Measured:
    s, u = _cc(df, "parity_check", True), _cc(df, "parity_check", False)
    if np.isnan(s):
        return Measured("no data", None)
    return Measured(f"scaled {100 * s:.1f}%, unscaled {100 * u:.1f}%", s >= 0.9)


@claim("temperature_alignment_t5", notebook=NAME, paper="Chi et al. 2023 (attention alignment)", min_profile="cpu",
       statement="matching attention entropy beyond L lowers the T5-bias model's loss there",
       paper_value="alignment lowers perplexity beyond the training length",
       threshold="T5 bpb at the longest length: aligned < unaligned")
def _align(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="alignment", encoding="t5")
    if r.empty:
        return Measured("no data", None)
    n = r["length"].max()
    a = float(r[(r["length"] == n) & r["aligned"].astype(bool)]["bpb"].iloc[0])
    u = float(r[(r["length"] == n) & ~r["aligned"].astype(bool)]["bpb"].iloc[0])
    return Measured(f"at {int(n)}: aligned {a:.3f} vs {u:.3f} bpb", a < u)


def _rope(df: pd.DataFrame, method: str, n: int, finetuned: bool = False) -> float:
    r = select(df, experiment="rope_extension", method=method, length=n, finetuned=finetuned)
    return float(r["bpb"].iloc[0]) if len(r) else float("nan")


@claim("rope_extension_without_finetune", notebook=NAME, paper="bloc97 2023 (NTK); Peng et al. 2023 (YaRN)",
       min_profile="cpu", statement="dynamic NTK and YaRN lower the loss of a RoPE model beyond L without fine-tuning",
       paper_value="YaRN / dynamic NTK extend context without (or with little) fine-tuning",
       threshold="at 4L, dynamic and YaRN each have lower bpb than plain RoPE")
def _ext(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="rope_extension", method="rope", finetuned=False)
    if r.empty:
        return Measured("no data", None)
    n = int(sorted(r["length"])[0] * 4)
    base, dyn, yarn = _rope(df, "rope", n), _rope(df, "dynamic", n), _rope(df, "yarn", n)
    if any(np.isnan(v) for v in (base, dyn, yarn)):
        return Measured(f"no 4L ({n}) data", None)
    return Measured(f"at {n}: rope {base:.3f}, dynamic {dyn:.3f}, yarn {yarn:.3f} bpb", dyn < base and yarn < base)


@claim("position_interpolation_after_finetune", notebook=NAME, paper="Chen et al. 2023 (position interpolation)",
       min_profile="cpu", statement="after a short fine-tune at 2L, position interpolation beats plain RoPE at 2L",
       paper_value="PI + 1000 fine-tuning steps extends LLaMA to 32x its context",
       threshold="linear (PI) fine-tuned at 2L: bpb at 2L < plain RoPE's (not fine-tuned) at 2L")
def _pi(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="rope_extension", method="rope", finetuned=False)
    if r.empty:
        return Measured("no data", None)
    n = int(sorted(r["length"])[0] * 2)
    pi, base = _rope(df, "linear", n, True), _rope(df, "rope", n)
    if np.isnan(pi) or np.isnan(base):
        return Measured("no fine-tuned PI data", None)
    return Measured(f"at {n}: PI fine-tuned {pi:.3f} vs RoPE {base:.3f} bpb", pi < base)
