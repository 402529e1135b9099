"""Notebook 08: does a model use the context beyond L? Passkey retrieval by length and depth, loss by
position, and RoPE context extension of a pretrained transformers model.

(a) Passkey retrieval (Mohtashami & Jaggi 2023's format): small byte-level causal LMs, one per encoding
    and seed, trained at L on a mixture of corpus text and passkey documents; tested at L..16L and at
    depths 0..100%; RoPE also with position interpolation, dynamic NTK, YaRN and Llama 3 scaling at
    inference, and PI / plain RoPE after the same short fine-tune at 2L.
(b) Loss by position: notebook 02's models (model cache), the loss at each position of a 16L window.
(c) A transformers `AutoModelForCausalLM` (default: a byte-level Llama trained here and read back with
    `from_pretrained`): bits per token and passkey accuracy by length, native RoPE and transformers'
    own `rope_parameters` scalings.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from typing_extensions import Self

from .. import hf
from .. import passkey as P
from ..bench.dryrun import Planned
from ..claims import Condition, Measured, claim, select, unit_matrix
from ..config import Config, Seeds, one_of, replace
from ..data import Corpus, DataConfig, decode, load_corpus
from ..errors import ConfigError
from ..evaluate import nonoverlapping, segment_starts
from ..memo import memoized
from ..model import ModelConfig, build_model
from ..positional import ENCODINGS, PESpec
from ..stats import crossed_bootstrap
from ..train import TrainConfig, cache_key, cache_root, train, train_or_load
from . import lm_extrapolation as lm
from .extension import rope_spec, with_encoding

NAME = "08_long_context_retrieval"
EXTENSIONS = ("linear", "dynamic", "yarn", "llama3")
FIT = 0.8  # retrieval at L (mean over depths, worst seed) a claim beyond L needs


class LongContextConfig(Config):
    """Passkey models trained here; loss by position on notebook 02's models; one transformers model."""

    encodings: tuple[PESpec, ...] = Field(
        default_factory=lambda: ("none", "sinusoidal", "rope", "alibi", "t5", "kerple", "fire", "xpos", "randomized"),
        description="one passkey model per entry and seed")
    randomized_base: one_of(ENCODINGS.names) = Field("rope", description="the encoding `randomized` wraps")
    seeds: Seeds = Field((0, 1, 2), description="every passkey model is trained once per seed")
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(d_model=64, n_layers=2, n_heads=4, d_ff=256))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=1000, batch_size=32, seq_len=512, lr=3e-3,
                                                                    warmup=50, checkpoint_every=250))
    data: DataConfig = Field(default_factory=DataConfig)
    passkey: P.PasskeyFormat = Field(default_factory=P.PasskeyFormat)
    passkey_fraction: float = Field(0.5, gt=0, le=1, description="share of training rows that are passkey documents")
    multiples: tuple[Annotated[int, Field(ge=1)], ...] = Field((1, 2, 4, 8, 16), description="test lengths / L")
    depths: tuple[Annotated[float, Field(ge=0, le=1)], ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    samples: int = Field(16, ge=1, description="documents per (length, depth), the same for every model")
    rope_methods: tuple[one_of(EXTENSIONS), ...] = EXTENSIONS
    finetune_steps: int = Field(100, ge=0, description="PI and plain RoPE fine-tuned at 2L this long (0: skip)")
    finetune_lr: float = Field(1e-3, gt=0)
    position_windows: int = Field(32, ge=1, description="16L windows of the test split for the loss by position")
    position_bins: int = Field(64, ge=1, description="position bins of the loss-by-position curve")
    hf: str = Field("local", description="local (a byte-level Llama trained here) or hf:NAME_OR_PATH; "
                    "also --set model=hf:NAME_OR_PATH")
    hf_lengths: tuple[Annotated[int, Field(ge=2)], ...] = Field(
        (), description="test lengths of the transformers model (empty: multiples x its training length)")
    hf_max_tokens: int = Field(8192, ge=1, description="tokens scored per length for its perplexity")
    batch_tokens: int = Field(16384, ge=1, description="evaluation tokens per forward batch (memory bound)")

    @model_validator(mode="before")
    @classmethod
    def _model_spec(cls, data: Any) -> Any:
        """`model=hf:NAME_OR_PATH` names the transformers model (part c); `model` stays the small LMs' shape."""
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            data = dict(data)
            data["hf"] = data.pop("model")
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (why := hf.spec_problem(self.hf)):
            raise ConfigError(why)
        if self.model.mode != "decoder":
            raise ConfigError(f"model.mode = {self.model.mode!r}: passkey models are causal LMs; valid: decoder")
        if 1 not in self.multiples:
            raise ConfigError(f"multiples = {list(self.multiples)}: must include 1 (retrieval at L is the precondition)")
        P.check_length(self.passkey, self.train.seq_len, "train.seq_len")
        if self.randomized_base == "randomized":
            raise ConfigError("randomized_base = 'randomized': choose the encoding to wrap, e.g. rope")
        return self

    @property
    def lengths(self) -> list[int]:
        return sorted(m * self.train.seq_len for m in self.multiples)


def preflight(cfg: LongContextConfig) -> None:
    """The corpus loads and is large enough; a transformers model named by `hf` is reachable (ConfigError)."""
    corpus = load_corpus(cfg.data)
    need = 2 * max(cfg.lengths) + 2
    if corpus.test.numel() < need:
        raise ConfigError(f"data.corpus = {cfg.data.corpus!r}: test split of {corpus.test.numel()} bytes is shorter "
                          f"than {need} (twice the longest test length {max(cfg.lengths)})")
    if cfg.hf != "local":
        hf.resolve(cfg.hf)


label = lm.label  # names and encodings as notebook 02's (RoPE scalings know L; randomized draws from [0, 16L))
pe_config = lm.pe_config


def _batches(cfg: LongContextConfig, corpus: Corpus, seq_len: int, batch_size: int):  # noqa: ANN202
    return P.training_batches(cfg.passkey, corpus.train, batch_size, seq_len, cfg.passkey_fraction)


def test_samples(cfg: LongContextConfig, corpus: Corpus, length: int, codec: P.Codec = P.byte_codec) -> list[P.Sample]:
    """The documents of one test length: `samples` per depth, the same for every model."""
    return P.samples(cfg.passkey, length, cfg.depths, cfg.samples, 0, codec, corpus.test)


def _passkey_rows(model: torch.nn.Module, docs: list[P.Sample], length: int, batch_tokens: int,
                  **keys: object) -> list[dict[str, object]]:
    right = P.score(model, docs, max(1, batch_tokens // length))
    return [{"experiment": "passkey_sample", **keys, "length": length, "depth": d.depth, "sample": i,
             "correct": float(r)} for i, (d, r) in enumerate(zip(docs, right))]


@memoized
def run_passkey(cfg: LongContextConfig, corpus: Corpus | None = None, progress: bool = True) -> pd.DataFrame:
    """Train (or load) every passkey model and score it at every (length, depth); RoPE also under each
    extension at inference, and PI / plain RoPE after the same fine-tune at 2L."""
    corpus = corpus or load_corpus(cfg.data)
    L = cfg.train.seq_len
    docs = {n: test_samples(cfg, corpus, n) for n in cfg.lengths}
    key = {"passkey": cfg.passkey, "fraction": cfg.passkey_fraction, "data": cfg.data}
    rows: list[dict[str, object]] = []
    for spec in cfg.encodings:
        lab = label(cfg, spec)
        for seed in cfg.seeds:
            tcfg = replace(cfg.train, seed=seed)
            torch.manual_seed(seed)
            pe = pe_config(cfg, spec)
            model, tr = train_or_load(build_model(cfg.model, pe), _batches(cfg, corpus, L, tcfg.batch_size), tcfg,
                                      cfg.model, pe, key, progress=progress, desc=f"passkey {lab} seed {seed}")
            rows.append({"experiment": "passkey_train", "encoding": lab, "seed": seed, "status": tr.status,
                         "final_loss": tr.losses[-1] if tr.losses else float("nan"), "steps": tr.steps})
            torch.manual_seed(seed + 1)
            for n in cfg.lengths:
                rows += _passkey_rows(model, docs[n], n, cfg.batch_tokens, encoding=lab, method=lab, finetuned=False,
                                      seed=seed)
            if spec.name != "rope":
                continue
            for method in cfg.rope_methods:
                for n in cfg.lengths:
                    m = with_encoding(model, method, n / L, L)
                    rows += _passkey_rows(m, docs[n], n, cfg.batch_tokens, encoding=lab, method=method,
                                          finetuned=False, seed=seed)
            if cfg.finetune_steps:
                for method in ("rope", "linear"):
                    tuned = copy.deepcopy(with_encoding(model, method, 2.0, L))
                    ft = replace(cfg.train, steps=cfg.finetune_steps, lr=cfg.finetune_lr, seed=seed, seq_len=2 * L,
                                 warmup=min(10, cfg.finetune_steps), batch_size=max(1, cfg.train.batch_size // 2),
                                 min_lr_ratio=1.0)
                    torch.manual_seed(seed)
                    train(tuned, _batches(cfg, corpus, 2 * L, ft.batch_size), ft, progress=progress,
                          desc=f"fine-tune {method} at 2L seed {seed}")
                    for n in cfg.lengths:
                        m = with_encoding(tuned, method, max(2.0, n / L), L) if method != "rope" else tuned
                        rows += _passkey_rows(m, docs[n], n, cfg.batch_tokens, encoding=lab, method=method,
                                              finetuned=True, seed=seed)
    return pd.DataFrame(rows)


def accuracy(results: pd.DataFrame) -> pd.DataFrame:
    """Passkey accuracy per (method, finetuned, seed, length, depth)."""
    s = select(results, experiment="passkey_sample")
    if s.empty:
        return s
    return s.groupby(["method", "finetuned", "seed", "length", "depth"], sort=False, as_index=False)["correct"].mean()


def accuracy_by_length(results: pd.DataFrame, n_resamples: int = 1000) -> pd.DataFrame:
    """Accuracy (mean over depths and documents) per (method, finetuned, length) with its 95% interval over
    seeds and documents (`stats.crossed_bootstrap`): the curves of the accuracy-by-length figure."""
    s = select(results, experiment="passkey_sample")
    rows = []
    if s.empty:
        return pd.DataFrame(rows)
    s = s.assign(finetuned=s["finetuned"].astype(bool))
    for (method, ft, n), g in s.groupby(["method", "finetuned", "length"], sort=False):
        d = unit_matrix(g, ["method"], [(method,)], "correct", "sample")
        if d.size == 0:
            continue
        est = crossed_bootstrap(d, _mean(0), n_resamples=n_resamples)
        rows.append({"method": method, "finetuned": ft, "length": int(n), "accuracy": est.value, "low": est.low,
                     "high": est.high, "n_seeds": est.n_seeds, "n_docs": est.n_units})
    return pd.DataFrame(rows)


def heatmap(results: pd.DataFrame, method: str, finetuned: bool = False) -> pd.DataFrame:
    """Accuracy (mean over seeds and samples), depth x length, for the needle-in-a-haystack map."""
    s = select(results, experiment="passkey_sample", method=method)
    s = s[s["finetuned"].astype(bool) == finetuned] if not s.empty else s
    if s.empty:
        return pd.DataFrame()
    t = s.pivot_table(index="depth", columns="length", values="correct", aggfunc="mean").sort_index(ascending=False)
    t.columns = [int(c) for c in t.columns]
    return t


# ----------------------------------------------------------------------------- (b) loss by position


@torch.no_grad()
def loss_by_position(model: torch.nn.Module, data: torch.Tensor, length: int, windows: int, bins: int,
                     batch_tokens: int = 16384) -> np.ndarray:
    """Bits of the next-token loss at each position of `windows` test windows of `length` tokens, averaged
    over windows and then over `bins` equal bins of positions: (bins,)."""
    model.eval()
    device = next(model.parameters()).device
    starts = segment_starts(data.numel(), length, windows, 0)
    idx = starts[:, None] + torch.arange(length + 1)[None, :]  # (W, length+1)
    total = torch.zeros(length, dtype=torch.float64)
    step = max(1, batch_tokens // length)
    for i in range(0, len(starts), step):
        w = data[idx[i:i + step]].long().to(device)
        logits = model(w[:, :-1])
        ce = F.cross_entropy(logits.float().transpose(1, 2), w[:, 1:], reduction="none")  # (b, length)
        total += ce.double().sum(0).cpu()
    per_pos = (total / len(starts) / np.log(2)).numpy()
    return per_pos[: length // bins * bins].reshape(bins, -1).mean(1) if length >= bins else per_pos


@memoized
def run_position_loss(cfg: LongContextConfig, profile: str, progress: bool = True) -> pd.DataFrame:
    """Loss by position over a 16L window for every model of notebook 02 (its model cache, every seed)."""
    c02 = lm.load_config(profile)
    corpus = load_corpus(c02.data)
    length = max(c02.lengths)
    rows = []
    for spec in c02.encodings:
        if spec.name == "learned":  # a table of L positions cannot read a 16L window
            continue
        for seed in c02.seeds:
            try:
                model = lm.train_one(c02, corpus, spec, progress, seed)[0]
            except Exception as e:  # noqa: BLE001 -- a diverged model of notebook 02 is reported there
                rows.append({"experiment": "position_loss_failed", "encoding": lm.label(c02, spec), "seed": seed,
                             "error": str(e)})
                continue
            torch.manual_seed(seed + 1)
            curve = loss_by_position(model, corpus.test, length, cfg.position_windows, cfg.position_bins,
                                     cfg.batch_tokens)
            width = length / len(curve)
            rows += [{"experiment": "position_loss", "encoding": lm.label(c02, spec), "seed": seed,
                      "position": (b + 0.5) * width, "bpb": float(v), "train_length": c02.train.seq_len}
                     for b, v in enumerate(curve)]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- (c) a transformers model


def local_llama(cfg: LongContextConfig, corpus: Corpus, progress: bool = True) -> str:
    """The default transformers model: a byte-level `LlamaForCausalLM` of the small models' shape, trained
    here like them (first seed, same mixture and steps) and saved with `save_pretrained`; its folder."""
    m = cfg.model
    config = hf.byte_llama_config(m.d_model, m.n_layers, m.n_heads, m.d_ff, cfg.train.seq_len)
    tcfg = replace(cfg.train, seed=cfg.seeds[0])
    folder = cache_root() / ("llama-" + cache_key(tcfg, config.to_dict(), cfg.passkey, cfg.passkey_fraction, cfg.data))

    def fit(model: torch.nn.Module, checkpoint: Any) -> None:
        torch.manual_seed(tcfg.seed)
        train(model, _batches(cfg, corpus, cfg.train.seq_len, tcfg.batch_size), tcfg, checkpoint=checkpoint,
              progress=progress, desc="transformers Llama (byte level)")

    return str(hf.train_byte_llama(config, folder, fit))


@memoized
def run_hf(cfg: LongContextConfig, progress: bool = True) -> pd.DataFrame:
    """Bits per token and passkey accuracy by length of the transformers model, native RoPE and each
    scaling set through its config's `rope_parameters`."""
    corpus = load_corpus(cfg.data)
    source = local_llama(cfg, corpus, progress) if cfg.hf == "local" else hf.resolve(cfg.hf)
    base, codec = hf.load(source)
    L = int(base.config.max_position_embeddings)
    lengths = sorted(cfg.hf_lengths) if cfg.hf_lengths else [m * L for m in cfg.multiples]
    test = (corpus.test if codec is P.byte_codec
            else torch.tensor(codec(decode(corpus.test[: 8 * cfg.hf_max_tokens + 4 * max(lengths)])),
                              dtype=torch.long))
    rows = []
    for method in ("rope", *cfg.rope_methods):
        for n in lengths:
            model = base if method == "rope" else hf.load(source, method, n / L, L)[0]
            ev = nonoverlapping(model, test, n, cfg.hf_max_tokens, cfg.batch_tokens, segment=max(lengths))
            docs = P.samples(cfg.passkey, n, cfg.depths, cfg.samples, 0, codec, corpus.test)
            right = P.score(model, docs, max(1, cfg.batch_tokens // n))
            rows.append({"experiment": "hf", "model": cfg.hf, "method": method, "length": n, "train_length": L,
                         "bits_per_token": ev["bpb"], "ppl": ev["ppl"], "passkey": float(np.mean(right)),
                         "passkey_n": len(right)})
    return pd.DataFrame(rows)


def run(cfg: LongContextConfig, profile: str, progress: bool = True) -> pd.DataFrame:
    return pd.concat([run_passkey(cfg, progress=progress), run_position_loss(cfg, profile, progress),
                      run_hf(cfg, progress)], ignore_index=True)


# ----------------------------------------------------------------------------- claims
# Units: the test documents of a length (depth x sample), the same for every model; intervals resample
# seeds and documents (`stats.crossed_bootstrap`). Precondition: each seed's model retrieves at L
# (accuracy over the depths >= FIT); a claim about beyond L says nothing otherwise.


def _matrix(df: pd.DataFrame, columns: list[tuple[str, bool, int]], depth: float | None = None) -> np.ndarray:
    """Correctness (seeds, documents, k) for each (method, finetuned, length) of `columns`."""
    s = select(df, experiment="passkey_sample")
    if s.empty:
        return np.empty((0, 0, len(columns)))
    s = s.assign(finetuned=s["finetuned"].astype(bool))
    if depth is not None:
        s = s[np.isclose(s["depth"].astype(float), depth)]
    return unit_matrix(s, ["method", "finetuned", "length"], columns, "correct", "sample")


def _train_length(df: pd.DataFrame) -> int | None:
    s = select(df, experiment="passkey_sample")
    return int(s["length"].min()) if len(s) else None


def _fit(df: pd.DataFrame, method: str, finetuned: bool = False) -> str:
    """Why `method`'s models say nothing beyond L ('' when every seed retrieves at L)."""
    L = _train_length(df)
    acc = accuracy(df)
    a = select(acc, method=method, length=L) if L else acc.iloc[0:0]
    a = a[a["finetuned"].astype(bool) == finetuned] if len(a) else a
    if a.empty:
        return f"no passkey data for {method} at L"
    per_seed = a.groupby("seed")["correct"].mean()
    if per_seed.min() < FIT:
        return (f"precondition: {method} does not retrieve at L = {L} (seed {int(per_seed.idxmin())}: "
                f"{per_seed.min():.2f}, needs >= {FIT})")
    return ""


def _mean(i: int):  # noqa: ANN202
    return lambda a: float(np.mean(a[..., i]))


def _diff(i: int, j: int):  # noqa: ANN202
    return lambda a: float(np.mean(a[..., i]) - np.mean(a[..., j]))


@claim("passkey_rope_collapses_beyond_L", notebook=NAME, paper="Chen et al. 2023 (position interpolation), sec. 3.4",
       min_profile="cpu", statement="without context extension, a RoPE model's passkey retrieval collapses beyond L",
       paper_value="LLaMA models fine-tuned directly on longer windows (no interpolation) keep an effective passkey "
       "window near their pre-training length (2048 -> 2560 after 10,000 steps)",
       threshold="precondition: RoPE retrieves at L (>= 0.8 every seed); 95% interval of accuracy at 4L wholly <= 0.2")
def _rope_collapse(df: pd.DataFrame) -> Measured:
    if (why := _fit(df, "rope")):
        return Measured.missing(why)
    L = _train_length(df)
    d = _matrix(df, [("rope", False, L), ("rope", False, 4 * L)])
    if d.size == 0:
        return Measured.missing(f"no RoPE data at 4L = {4 * L}")
    at_l, at_4l = crossed_bootstrap(d, _mean(0)), crossed_bootstrap(d, _mean(1))
    return Measured(f"RoPE at L {at_l.text()}, at 4L {at_4l.text()} ({at_4l.n_seeds} seeds x {at_4l.n_units} docs)",
                    (Condition("accuracy at 4L", at_4l, "<=", 0.2),))


@claim("passkey_pi_after_finetune", notebook=NAME, paper="Chen et al. 2023 (position interpolation), sec. 3.4",
       min_profile="cpu", statement="after a short fine-tune at 2L, position interpolation retrieves the key at 2L, "
       "better than plain RoPE fine-tuned the same way",
       paper_value="PI reaches its target window in passkey retrieval after 200 fine-tuning steps; direct "
       "fine-tuning extends it slowly",
       threshold="precondition: RoPE retrieves at L before fine-tuning; 95% intervals at 2L: PI (fine-tuned) "
       "accuracy wholly >= 0.8 and PI - RoPE (both fine-tuned) wholly > 0")
def _pi(df: pd.DataFrame) -> Measured:
    if (why := _fit(df, "rope")):
        return Measured.missing(why)
    L = _train_length(df)
    d = _matrix(df, [("linear", True, 2 * L), ("rope", True, 2 * L)])
    if d.size == 0:
        return Measured.missing("needs fine-tuned PI and RoPE (finetune_steps > 0)")
    pi, gain = crossed_bootstrap(d, _mean(0)), crossed_bootstrap(d, _diff(0, 1))
    return Measured(f"at 2L: PI fine-tuned {pi.text()}, PI - RoPE (fine-tuned) {gain.text('+.3f')} "
                    f"({pi.n_seeds} seeds)", (Condition("PI accuracy at 2L", pi, ">=", 0.8),
                                               Condition("PI - RoPE at 2L", gain, ">", 0.0)))


@claim("passkey_yarn_dynamic_without_finetune", notebook=NAME, paper="Peng et al. 2023 (YaRN), sec. 3.3-3.4",
       min_profile="cpu", statement="dynamic NTK and YaRN applied at inference retrieve the key beyond L better "
       "than unscaled RoPE, without fine-tuning",
       paper_value="dynamic scaling extends a model without fine-tuning and degrades gracefully beyond L",
       threshold="precondition: RoPE retrieves at L; 95% intervals at 2L of dynamic - RoPE and YaRN - RoPE "
       "accuracy wholly > 0")
def _yarn(df: pd.DataFrame) -> Measured:
    if (why := _fit(df, "rope")):
        return Measured.missing(why)
    L = _train_length(df)
    d = _matrix(df, [("rope", False, 2 * L), ("dynamic", False, 2 * L), ("yarn", False, 2 * L)])
    if d.size == 0:
        return Measured.missing("needs rope, dynamic and yarn at 2L (rope_methods)")
    dyn, yarn = crossed_bootstrap(d, _diff(1, 0)), crossed_bootstrap(d, _diff(2, 0))
    return Measured(f"at 2L: RoPE {crossed_bootstrap(d, _mean(0)).text()}, dynamic - RoPE {dyn.text('+.3f')}, "
                    f"YaRN - RoPE {yarn.text('+.3f')} ({dyn.n_seeds} seeds)",
                    (Condition("dynamic - RoPE", dyn, ">", 0.0), Condition("YaRN - RoPE", yarn, ">", 0.0)))


@claim("passkey_alibi_far_key_unreachable", notebook=NAME,
       paper="this workbook's hypothesis (from ALiBi's linear bias; Press et al. 2022 measure perplexity only)",
       min_profile="cpu", statement="ALiBi's flat perplexity beyond L does not come with retrieval of a key far "
       "beyond L: with the key at depth 0 of an 8L document, ALiBi does not retrieve it",
       paper_value="no paper figure: a hypothesis fixed before the run",
       threshold="precondition: ALiBi retrieves at L (>= 0.8 every seed); 95% interval of accuracy at 8L, depth 0, "
       "wholly <= 0.2")
def _alibi(df: pd.DataFrame) -> Measured:
    if (why := _fit(df, "alibi")):
        return Measured.missing(why)
    L = _train_length(df)
    d = _matrix(df, [("alibi", False, 8 * L)], depth=0.0)
    if d.size == 0:
        return Measured.missing(f"no ALiBi data at 8L = {8 * L}, depth 0")
    est = crossed_bootstrap(d, _mean(0))
    return Measured(f"ALiBi at 8L, depth 0: {est.text()} ({est.n_seeds} seeds x {est.n_units} docs)",
                    (Condition("accuracy at 8L, depth 0", est, "<=", 0.2),))


@claim("hf_model_retrieves_at_L", notebook=NAME, paper="implementation check of the transformers path", min_profile="cpu",
       kind="check", statement="the transformers model, loaded back with from_pretrained, retrieves the key at its "
       "training length with its native RoPE",
       paper_value="n/a (the loading path and the scoring are the same as for the workbook's own models)",
       threshold="passkey accuracy at its training length >= 0.5 (one model: a point value)")
def _hf_check(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="hf", method="rope")
    if r.empty:
        return Measured.missing("no transformers-model data")
    at_l = r[r["length"] == r["train_length"]]
    if at_l.empty:
        return Measured.missing("its training length is not among the test lengths")
    acc = float(at_l["passkey"].iloc[0])
    return Measured.exact(f"{r['model'].iloc[0]}: passkey at {int(at_l['length'].iloc[0])}: {acc:.2f}",
                          "accuracy at L", acc, ">=", 0.5)


def dry_run_plan(cfg: LongContextConfig, profile: str = "gpu") -> list[Planned]:
    """Every passkey model at its training and longest test shapes, and the fine-tunes at 2L (for
    `bench.dryrun`); the transformers model is loaded by transformers itself and is not planned here."""
    n, L = max(cfg.lengths), cfg.train.seq_len
    out = [Planned(label(cfg, e), cfg.model, pe_config(cfg, e), cfg.train.batch_size, L,
                   max(1, cfg.batch_tokens // n), n) for e in cfg.encodings]
    if cfg.finetune_steps:
        out += [Planned(f"{m} fine-tuned at 2L", cfg.model, rope_spec(m, 2.0, L),
                        max(1, cfg.train.batch_size // 2), 2 * L, max(1, cfg.batch_tokens // n), n)
                for m in ("rope", "linear")]
    return out
