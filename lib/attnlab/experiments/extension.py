"""Notebook 07: inference-time fixes beyond the training length.

(a) Chiang & Cholak 2022: their exact PARITY construction (accuracy and cross-entropy by length,
    with and without layer norm and log-length scaling); log-length scaling of attention logits on FIRST and PARITY, with their
    position features (an indicator of the first symbol; [i/n, cos(i pi)] for PARITY);
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
from ..bench.dryrun import Planned
from ..claims import Condition, Measured, claim, select, unit_matrix
from ..config import Config, Seeds, one_of, replace
from ..data import load_corpus, random_batch
from ..evaluate import nonoverlapping, segment_rows
from ..memo import memoized
from ..model import ModelConfig, build_model
from ..positional import PEDims, build_encoding
from ..stats import crossed_bootstrap, wilson
from ..tasks.base import get_task
from ..train import TrainConfig, lm_batches, train, train_or_load
from . import lm_extrapolation as lm
from .algorithmic import Layout, _rng, sample_scores
from .exact_parity import evaluate as evaluate_exact

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
    exact_samples: int = Field(128, ge=1, description="bit strings per length for the exact PARITY construction "
                               "(128 all right: Wilson interval above 0.97)")
    exact_eps: tuple[Annotated[float, Field(gt=0)], ...] = Field(
        (1e-5, 1e-20), description="layer-norm eps of the exact construction's layer-norm form")
    cc_seeds: Seeds = Field((0, 1, 2), description="one FIRST / PARITY model per seed")
    align_encodings: tuple[one_of(("t5", "alibi", "kerple", "fire")), ...] = ("t5", "alibi")
    align_sequences: int = Field(8, ge=1, description="windows used to match attention entropy")
    rope_methods: tuple[one_of(ROPE_METHODS), ...] = ROPE_METHODS
    finetune_steps: int = Field(100, ge=0, description="fine-tune at 2L for this many steps (0: skip)")
    finetune_methods: tuple[one_of(ROPE_METHODS), ...] = Field(
        ("rope", "linear"), description="methods fine-tuned at 2L (plain rope too: PI is compared like with like)")
    finetune_lr: float = Field(2e-4, gt=0)
    max_tokens: int = Field(16384, ge=1, description="tokens scored per evaluation length")


# ----------------------------------------------------------------------------- (a) log-length scaling

# Chiang & Cholak's position features: FIRST reads an indicator of the first symbol (position 1, after the
# read-out symbol at 0); PARITY the features [i / n, cos(i pi)] (their first.py / parity.py).
CC_ENCODING = {"first": "indicator", "parity_check": "parity_features"}


@memoized
def run_cc(cfg: ExtensionConfig, progress: bool = True) -> pd.DataFrame:
    """FIRST / PARITY with and without log-length scaling, one model per seed: score of every test sample
    (the same samples for every model) by test length."""
    rows = []
    for name in cfg.cc_tasks:
        task = get_task(name)
        layout = Layout("encoder", task, prefix_tape=True)  # read at position 0, as Chiang & Cholak
        pe = CC_ENCODING[name]
        for scaled in (False, True):
            mcfg = replace(cfg.cc_model, vocab_size=layout.vocab_size, log_length_scaling=scaled)
            for seed in cfg.cc_seeds:
                tcfg = replace(cfg.cc_train, seed=seed)

                def batch_fn(step: int, gen: torch.Generator, layout: Layout = layout, bs: int = tcfg.batch_size):  # noqa: ANN202
                    rng = _rng(gen)
                    n = int(rng.integers(1, cfg.cc_train_max_length + 1))
                    return layout.batch(n, bs, rng)

                torch.manual_seed(seed)
                model, tr = train_or_load(build_model(mcfg, pe), batch_fn, tcfg, mcfg, pe,
                                          {"task": name, "n_train": cfg.cc_train_max_length, "readout": "first"},
                                          progress=progress, desc=f"{name} {'log n' if scaled else 'plain'} seed {seed}")
                for n in sorted({*cfg.cc_test_lengths, cfg.cc_train_max_length}):
                    sc = sample_scores(model, layout, n, cfg.cc_eval_samples, 0)
                    rows.append({"experiment": "log_scaling", "task": name, "scaled": scaled, "seed": seed,
                                 "length": n, "accuracy": float(sc.mean()), "in_distribution": n <= cfg.cc_train_max_length,
                                 "final_loss": tr.losses[-1] if tr.losses else float("nan")})
                    rows += [{"experiment": "log_scaling_sample", "task": name, "scaled": scaled, "seed": seed,
                              "length": n, "sample": i, "score": float(v)} for i, v in enumerate(sc)]
    return pd.DataFrame(rows)


@memoized
def run_exact(cfg: ExtensionConfig) -> pd.DataFrame:
    """Chiang & Cholak's hand-set PARITY transformer at every test length: plain, with log-length scaling,
    and in its layer-norm form for each eps (the same bit strings for every setting)."""
    settings = [("exact", {}), ("exact, log n", {"log_scaling": True})]
    settings += [(f"exact + layer norm (eps {e:g})", {"layernorm": True, "eps": e}) for e in cfg.exact_eps]
    rows = []
    for name, kw in settings:
        for r in evaluate_exact(sorted(set(cfg.cc_test_lengths)), cfg.exact_samples, **kw):
            rows.append({"experiment": "exact_parity", "setting": name, **r})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- (b) temperature alignment


@memoized
def run_alignment(cfg: ExtensionConfig, profile: str, progress: bool = True) -> pd.DataFrame:
    """bpb by length for bias-PE models of notebook 02 (every seed), with and without entropy-matched
    temperature; per-segment rows on the same test segments for every model."""
    c02 = lm.load_config(profile)
    corpus = load_corpus(c02.data)
    L = c02.train.seq_len
    rows = []
    for enc in cfg.align_encodings:
        for seed in c02.seeds:
            model = lm.train_one(c02, corpus, lm.find(c02, enc), progress, seed)[0]
            g = torch.Generator().manual_seed(0)
            x_l, _ = random_batch(corpus.valid, cfg.align_sequences, L, g)
            for n in c02.lengths:
                x_n, _ = random_batch(corpus.valid, max(1, cfg.align_sequences * L // n), n, g)
                s = 1.0 if n <= L else A.align_temperature(model, x_l, x_n)
                res: dict[float, dict[str, object]] = {}
                for aligned, scale in ((False, 1.0), (True, s)):
                    if scale not in res:  # at or below L the aligned model is the unaligned one: evaluate once
                        res[scale] = nonoverlapping(model, corpus.test, n, cfg.max_tokens, logit_scale=scale,
                                                   segment=max(c02.lengths))
                    rows.append({"experiment": "alignment", "encoding": enc, "seed": seed, "aligned": aligned,
                                 "length": n, "scale": scale, **res[scale]})
    return _with_segments(pd.DataFrame(rows), "alignment")


# ----------------------------------------------------------------------------- (c) RoPE extension


def rope_spec(method: str, factor: float, original: int) -> dict[str, object]:
    """The encoding spec of RoPE variant `method` scaling `factor` (at least 1) over `original` positions."""
    return {"name": method} if method == "rope" else {"name": method, "factor": max(1.0, factor),
                                                         "original_max_len": original}


def with_encoding(model: torch.nn.Module, method: str, factor: float, original: int) -> torch.nn.Module:
    """The same weights with the RoPE variant `method` (scaling `factor` over the training length)."""
    m = copy.copy(model)
    m._modules = dict(model._modules)  # a new module table: the original keeps its own encoding
    d = model.cfg.d_model // model.cfg.n_heads
    m.pe = build_encoding(rope_spec(method, factor, original),
                          PEDims(model.cfg.d_model, model.cfg.n_heads, d, causal=True))
    return m


@memoized
def run_rope(cfg: ExtensionConfig, profile: str, progress: bool = True) -> pd.DataFrame:
    """bpb at L..16L of notebook 02's RoPE models (every seed) under each extension method, and of the
    `finetune_methods` after the same short fine-tune at 2L (plain RoPE fine-tuned too: like with like)."""
    c02 = lm.load_config(profile)
    corpus = load_corpus(c02.data)
    L = c02.train.seq_len
    rows = []
    for seed in c02.seeds:
        base = lm.train_one(c02, corpus, lm.find(c02, "rope"), progress, seed)[0]

        def evaluate(model: torch.nn.Module, method: str, finetuned: bool, min_factor: float, seed: int = seed) -> None:
            for n in c02.lengths:
                m = with_encoding(model, method, max(min_factor, n / L), L)
                rows.append({"experiment": "rope_extension", "method": method, "finetuned": finetuned, "seed": seed,
                             "length": n, **nonoverlapping(m, corpus.test, n, cfg.max_tokens, segment=max(c02.lengths))})

        for method in cfg.rope_methods:
            evaluate(base, method, False, 1.0)
            if cfg.finetune_steps and method in cfg.finetune_methods:
                tuned = copy.deepcopy(with_encoding(base, method, 2.0, L))
                tcfg = replace(c02.train, steps=cfg.finetune_steps, lr=cfg.finetune_lr, seed=seed,
                               warmup=min(10, cfg.finetune_steps), seq_len=2 * L,
                               batch_size=max(1, c02.train.batch_size // 2), min_lr_ratio=1.0)
                torch.manual_seed(seed)
                train(tuned, lm_batches(corpus.train, tcfg.batch_size, tcfg.seq_len), tcfg, progress=progress,
                      desc=f"fine-tune {method} at 2L seed {seed}")
                evaluate(tuned, method, True, 2.0)
    return _with_segments(pd.DataFrame(rows), "rope_extension")


def _with_segments(ev: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """Aggregate rows plus one row per evaluation segment (experiment '<experiment>_segment')."""
    if ev.empty:
        return ev
    seg = segment_rows(ev).assign(experiment=f"{experiment}_segment")
    return pd.concat([ev.drop(columns=["segment_nll"]), seg], ignore_index=True)


def run(cfg: ExtensionConfig, profile: str, progress: bool = True) -> pd.DataFrame:
    return pd.concat([run_cc(cfg, progress), run_exact(cfg), run_alignment(cfg, profile, progress), run_rope(cfg, profile, progress)],
                     ignore_index=True)


# ----------------------------------------------------------------------------- claims
CC_FIT = 0.9  # a log-scaling claim needs each model at least this accurate at n <= the training maximum


def _cc_matrix(df: pd.DataFrame, task: str, length: int | None = None) -> tuple[np.ndarray, int]:
    """Scores (seeds, samples, 2) unscaled / scaled at `length` (default: the longest test length)."""
    r = select(df, experiment="log_scaling_sample", task=task)
    if r.empty:
        return np.empty((0, 0, 2)), 0
    n = int(r["length"].max()) if length is None else length
    return unit_matrix(r[r["length"] == n], ["scaled"], [(False,), (True,)], "score", "sample"), n


def _cc_fit(df: pd.DataFrame, task: str) -> str:
    """Why the models of `task` say nothing beyond the training lengths ('' when every one fits)."""
    r = select(df, experiment="log_scaling", task=task)
    r = r[r["in_distribution"].astype(bool)] if not r.empty else r
    if r.empty:
        return f"{task}: no in-distribution evaluation"
    worst = r.loc[r["accuracy"].idxmin()]
    if worst["accuracy"] < CC_FIT:
        return (f"{task}: the {'scaled' if worst['scaled'] else 'unscaled'} model (seed {int(worst['seed'])}) does "
                f"not fit the training lengths: accuracy {worst['accuracy']:.3f} at n = {int(worst['length'])}, "
                f"needs >= {CC_FIT}")
    return ""


def _cc_claim(df: pd.DataFrame, task: str, need_gain: bool) -> Measured:
    if (why := _cc_fit(df, task)):
        return Measured.missing(why)
    d, n = _cc_matrix(df, task)
    if d.size == 0:
        return Measured.missing(f"{task}: no per-sample scores")
    scaled = crossed_bootstrap(d, lambda a: float(np.mean(a[..., 1])))
    gain = crossed_bootstrap(d, lambda a: float(np.mean(a[..., 1]) - np.mean(a[..., 0])))
    conds = (Condition("scaled accuracy", scaled, ">=", 0.9),) + (
        (Condition("scaled - unscaled", gain, ">", 0.0),) if need_gain else ())
    return Measured(f"at n = {n}: scaled {scaled.text()}, scaled - unscaled {gain.text('+.3f')} "
                    f"({scaled.n_seeds} seeds x {scaled.n_units} samples)", conds)


@claim("log_scaling_first", notebook=NAME, paper="Chiang & Cholak 2022, sec. 5", min_profile="cpu",
       statement="with log-length scaling, a Transformer trained on FIRST at n <= 100 generalizes to n = 1000",
       paper_value="scaled model keeps ~100% accuracy at n = 1000; unscaled degrades",
       threshold="precondition: every model >= 0.9 at n <= 100; 95% intervals at the longest length: scaled "
       "accuracy wholly >= 0.9 and scaled - unscaled wholly > 0")
def _first(df: pd.DataFrame) -> Measured:
    return _cc_claim(df, "first", need_gain=True)


def _exact(df: pd.DataFrame, setting: str) -> tuple[pd.DataFrame, int]:
    r = select(df, experiment="exact_parity", setting=setting)
    return r, (int(r["length"].max()) if len(r) else 0)


@claim("parity_exact_construction", notebook=NAME, paper="Chiang & Cholak 2022, sec. 3 (Theorem 1)",
       statement="a transformer with weights set by hand recognizes PARITY with perfect accuracy at every length",
       paper_value="perfect accuracy for all n (construction; their parity_exact.py)",
       threshold="every setting (plain, log n, layer norm): Wilson 95% interval of accuracy at the longest length "
       "wholly >= 0.95")
def _exact_acc(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="exact_parity")
    if r.empty:
        return Measured.missing("no exact-construction data")
    n = int(r["length"].max())
    conds = []
    for setting, g in r[r["length"] == n].groupby("setting", sort=False):
        conds.append(Condition(f"{setting} accuracy", wilson(int(g["correct"].sum()), len(g)), ">=", 0.95))
    return Measured(f"at n = {n}: " + ", ".join(f"{c.label} {c.estimate.text()}" for c in conds), tuple(conds),
                    seeded=False)


@claim("parity_exact_confidence_decays", notebook=NAME, paper="Chiang & Cholak 2022, sec. 3-4 (Hahn's lemma)",
       statement="without layer normalization the exact PARITY model's cross-entropy approaches 1 bit as n grows",
       paper_value="cross-entropy approaching 1 bit per string as strings get longer",
       threshold="plain construction: 95% interval (over strings) of the mean cross-entropy at the longest length "
       "wholly >= 0.9 bits")
def _exact_ce(df: pd.DataFrame) -> Measured:
    r, n = _exact(df, "exact")
    if r.empty:
        return Measured.missing("no exact-construction data")
    g = r[r["length"] == n]["cross_entropy_bits"].to_numpy()
    est = crossed_bootstrap(g[None, :, None], lambda a: float(np.mean(a)))
    return Measured(f"cross-entropy at n = {n}: {est.text()} bits ({est.n_units} strings)",
                    (Condition("cross-entropy (bits)", est, ">=", 0.9),), seeded=False)


@claim("parity_layernorm_cross_entropy", notebook=NAME, paper="Chiang & Cholak 2022, sec. 4",
       statement="layer normalization brings the exact PARITY model's cross-entropy close to zero at every length, "
       "once eps is small against its squared margin",
       paper_value="cross-entropy arbitrarily close to zero with layer normalization",
       threshold="layer-norm form with the smallest eps: 95% interval of the worst mean cross-entropy over the "
       "test lengths wholly <= 0.1 bits")
def _exact_ln(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="exact_parity")
    ln = sorted({s for s in r.get("setting", []) if "layer norm" in s},
                key=lambda s: float(s.split("eps ")[1].rstrip(")")))
    if not ln:
        return Measured.missing("no layer-norm setting")
    g = r[r["setting"] == ln[0]].pivot_table(index="sample", columns="length", values="cross_entropy_bits")
    est = crossed_bootstrap(g.to_numpy()[None], lambda a: float(np.mean(a, axis=(0, 1)).max()))
    return Measured(f"{ln[0]}: worst mean cross-entropy over n = {', '.join(map(str, g.columns))}: "
                    f"{est.text()} bits", (Condition("worst cross-entropy (bits)", est, "<=", 0.1),), seeded=False)


@claim("log_scaling_parity", notebook=NAME, paper="Chiang & Cholak 2022, sec. 5", min_profile="cpu",
       statement="with log-length scaling, a learned PARITY model trained at n <= 100 generalizes to n = 1000",
       paper_value="an exact construction exists; learning it is reported as hard",
       threshold="precondition: every model >= 0.9 at n <= 100 (else inconclusive); 95% interval of scaled "
       "accuracy at the longest length wholly >= 0.9")
def _parity(df: pd.DataFrame) -> Measured:
    return _cc_claim(df, "parity_check", need_gain=False)


def _segments(df: pd.DataFrame, experiment: str, key: str, columns: list[tuple[object, object, int]]) -> np.ndarray:
    """bpb (seeds, segments, k) for each (key value, flag value, length) of `columns`."""
    seg = select(df, experiment=f"{experiment}_segment")
    flag = "aligned" if experiment == "alignment" else "finetuned"
    if flag in seg:
        seg = seg.assign(**{flag: seg[flag].astype(bool)})
    return unit_matrix(seg, [key, flag, "length"], columns, "bpb", "segment")


@claim("temperature_alignment_t5", notebook=NAME, paper="Chi et al. 2023 (attention alignment)", min_profile="cpu",
       statement="matching attention entropy beyond L (this harness's entropy-matched temperature) lowers the "
       "T5-bias model's loss at every length beyond L",
       paper_value="no figure of the paper is reproduced here: the harness's own procedure (see the notebook)",
       threshold="95% interval over seeds and segments of max over lengths > L of aligned - unaligned bpb "
       "wholly < 0")
def _align(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="alignment", encoding="t5")
    if r.empty:
        return Measured.missing("no alignment data")
    L = int(r["length"].min())
    longer = sorted(int(n) for n in r["length"].unique() if n > L)
    if not longer:
        return Measured.missing("no length beyond L")
    cols = [c for n in longer for c in (("t5", False, n), ("t5", True, n))]
    d = _segments(df, "alignment", "encoding", cols)
    if d.size == 0:
        return Measured.missing("no per-segment alignment data")
    stat = lambda a: float(max(np.mean(a[..., 2 * i + 1]) - np.mean(a[..., 2 * i]) for i in range(len(longer))))  # noqa: E731
    est = crossed_bootstrap(d, stat)
    return Measured(f"worst aligned - unaligned over {', '.join(map(str, longer))}: {est.text('+.3f')} bpb "
                    f"({est.n_seeds} seeds x {est.n_units} segments)",
                    (Condition("max aligned - unaligned", est, "<", 0.0),))


def _rope_len(df: pd.DataFrame, mult: int) -> int | None:
    r = select(df, experiment="rope_extension", method="rope", finetuned=False)
    return int(sorted(r["length"])[0] * mult) if len(r) else None


@claim("rope_extension_without_finetune", notebook=NAME, paper="bloc97 2023 (NTK); Peng et al. 2023 (YaRN)",
       min_profile="cpu", statement="dynamic NTK and YaRN lower the loss of a RoPE model beyond L without fine-tuning",
       paper_value="YaRN / dynamic NTK extend context without (or with little) fine-tuning",
       threshold="at 4L, 95% intervals over seeds and segments of dynamic - RoPE and YaRN - RoPE bpb wholly < 0")
def _ext(df: pd.DataFrame) -> Measured:
    n = _rope_len(df, 4)
    if n is None:
        return Measured.missing("no data")
    d = _segments(df, "rope_extension", "method", [("rope", False, n), ("dynamic", False, n), ("yarn", False, n)])
    if d.size == 0:
        return Measured.missing(f"no 4L ({n}) data for rope, dynamic and yarn")
    dyn = crossed_bootstrap(d, lambda a: float(np.mean(a[..., 1]) - np.mean(a[..., 0])))
    yarn = crossed_bootstrap(d, lambda a: float(np.mean(a[..., 2]) - np.mean(a[..., 0])))
    return Measured(f"at {n}: dynamic - rope {dyn.text('+.3f')}, yarn - rope {yarn.text('+.3f')} bpb "
                    f"({dyn.n_seeds} seeds)",
                    (Condition("dynamic - rope", dyn, "<", 0.0), Condition("yarn - rope", yarn, "<", 0.0)))


@claim("position_interpolation_after_finetune", notebook=NAME, paper="Chen et al. 2023 (position interpolation)",
       min_profile="cpu", statement="after the same short fine-tune at 2L, position interpolation beats fine-tuning "
       "plain RoPE directly at 2L",
       paper_value="PI + 1000 fine-tuning steps extends LLaMA to 32x its context; direct fine-tuning extends slowly",
       threshold="95% interval over seeds and segments of PI (fine-tuned) - RoPE (fine-tuned) bpb at 2L wholly < 0")
def _pi(df: pd.DataFrame) -> Measured:
    n = _rope_len(df, 2)
    if n is None:
        return Measured.missing("no data")
    d = _segments(df, "rope_extension", "method", [("rope", True, n), ("linear", True, n)])
    if d.size == 0:
        return Measured.missing("needs fine-tuned rope and linear (finetune_methods, finetune_steps > 0)")
    est = crossed_bootstrap(d, lambda a: float(np.mean(a[..., 1]) - np.mean(a[..., 0])))
    return Measured(f"at {n}: PI fine-tuned - RoPE fine-tuned {est.text('+.3f')} bpb ({est.n_seeds} seeds)",
                    (Condition("PI - RoPE (both fine-tuned)", est, "<", 0.0),))


def dry_run_plan(cfg: ExtensionConfig, profile: str) -> list[Planned]:
    """Part (a)'s FIRST / PARITY models at the longest test length and part (c)'s RoPE fine-tune at 2L."""
    out = []
    for name in cfg.cc_tasks:
        layout = Layout("encoder", get_task(name), prefix_tape=True)
        for scaled in (False, True):
            mcfg = replace(cfg.cc_model, vocab_size=layout.vocab_size, log_length_scaling=scaled)
            out.append(Planned(f"{name} {'log n' if scaled else 'plain'}", mcfg, CC_ENCODING[name],
                               cfg.cc_train.batch_size, layout.seq_len(cfg.cc_train_max_length), cfg.cc_eval_samples,
                               layout.seq_len(max(cfg.cc_test_lengths))))
    c02 = lm.load_config(profile)
    L = c02.train.seq_len
    for method in cfg.finetune_methods if cfg.finetune_steps else ():
        out.append(Planned(f"{method} fine-tuned at 2L", c02.model, rope_spec(method, 2.0, L), max(1, c02.train.batch_size // 2), 2 * L,
                           max(1, cfg.max_tokens // max(c02.lengths)), max(c02.lengths)))
    return out
