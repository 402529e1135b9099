"""Notebook 02: train short, test long (Press et al. 2022, Figure 1 and Tables 2-7).

Causal byte-level LMs, one per positional encoding, trained at length L and evaluated at
L, 2L, 4L, 8L, 16L with non-overlapping windows and a sliding window. Byte-level losses are
small numbers, so claims are stated as ratios of bits per byte, fixed below before any run.
"""

from __future__ import annotations

import pandas as pd
import torch
from pydantic import Field, model_validator
from typing_extensions import Self

from ..bench.timing import interleaved_medians
from ..bench.train import train_step_timer
from ..claims import Measured, claim, select
from ..config import Config, load, one_of
from ..data import Corpus, DataConfig, check_sizes, load_corpus
from ..errors import ConfigError
from ..evaluate import EvalConfig, by_length
from ..model import ModelConfig, build_model
from ..positional import ENCODINGS, PESpec
from ..train import TrainConfig, TrainingDiverged, lm_batches, train_or_load

NAME = "02_lm_length_extrapolation"


class LMExtrapolationConfig(Config):
    """Train causal LMs at length L (train.seq_len), evaluate at multiples of L."""

    encodings: tuple[PESpec, ...] = Field(
        default_factory=lambda: ("sinusoidal", "learned", "rope", "xpos", "alibi", "t5", "kerple", "fire", "none",
                                 "randomized"),
        description="one model per entry: a name, or {name: ..., parameter: value} (e.g. {name: t5, num_buckets: 64})")
    randomized_base: one_of(ENCODINGS.names) = Field("rope", description="the encoding `randomized` wraps")
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    batch_tokens: int = Field(16384, ge=1, description="evaluation tokens per forward batch (memory bound)")
    speed_rounds: int = Field(6, ge=0, description="interleaved rounds of the training-speed benchmark (0: none)")
    speed_steps: int = Field(3, ge=1, description="training steps per encoding and round of the speed benchmark")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.model.mode != "decoder":
            raise ConfigError(f"model.mode = {self.model.mode!r}: this notebook trains causal LMs; valid: decoder")
        if self.randomized_base == "randomized":
            raise ConfigError("randomized_base = 'randomized': choose the encoding to wrap, e.g. rope")
        if self.train.seq_len not in self.eval.lengths:
            raise ConfigError(f"eval.lengths = {list(self.eval.lengths)}: must include the training length "
                              f"train.seq_len = {self.train.seq_len}")
        labels = [label(self, e) for e in self.encodings]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"encodings = {labels}: duplicates")
        return self

    @property
    def lengths(self) -> list[int]:
        return sorted(self.eval.lengths)


def load_config(profile: str) -> LMExtrapolationConfig:
    """Notebook 02's config at `profile` (notebooks 06-07 reuse its models)."""
    return load(LMExtrapolationConfig, NAME, profile)


def label(cfg: LMExtrapolationConfig, spec: PESpec) -> str:
    """The name a model goes by in tables and figures."""
    return f"randomized({cfg.randomized_base})" if spec.name == "randomized" else spec.name


def find(cfg: LMExtrapolationConfig, name: str) -> PESpec:
    """The entry of `cfg.encodings` named `name`, or that encoding with its default parameters."""
    return next((e for e in cfg.encodings if e.name == name), PESpec.model_validate(name))


def pe_config(cfg: LMExtrapolationConfig, spec: PESpec | str) -> PESpec:
    """The PE of one model: RoPE scalings know L; learned gets a table of L; randomized draws from [0, 16L)."""
    spec = PESpec.model_validate(spec).adapt(original_max_len=cfg.train.seq_len)
    if spec.name == "learned":
        spec = spec.with_params(max_len=cfg.train.seq_len)
    if spec.name == "randomized":
        spec = spec.with_params(base=cfg.randomized_base, max_len=max(cfg.lengths))
    return spec


def check(cfg: LMExtrapolationConfig, corpus: Corpus) -> None:
    """Errors that depend on the corpus, raised before any training."""
    check_sizes(corpus, cfg.train.seq_len, max(cfg.lengths))


def train_one(cfg: LMExtrapolationConfig, corpus: Corpus, spec: PESpec | str, progress: bool = True):  # noqa: ANN201
    """Train (or load from the model cache) the LM with encoding `spec`; returns (model, TrainResult)."""
    torch.manual_seed(cfg.train.seed)
    pe = pe_config(cfg, spec)
    model = build_model(cfg.model, pe)
    return train_or_load(model, lm_batches(corpus.train, cfg.train.batch_size, cfg.train.seq_len), cfg.train,
                         cfg.model, pe, cfg.data, progress=progress, desc=label(cfg, pe))


def speed_benchmark(cfg: LMExtrapolationConfig, corpus: Corpus) -> pd.DataFrame:
    """Training step time of every encoding, measured in interleaved rounds in one run (fresh models, one
    batch of the training data, the trainer's own step): medians that share the machine's drift, unlike
    the training logs, which were taken at different times (and, for cached models, in other sessions)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, y, _ = lm_batches(corpus.train, cfg.train.batch_size, cfg.train.seq_len)(0, torch.Generator().manual_seed(0))
    x, y = x.to(device), y.to(device)
    timers = {}
    for spec in cfg.encodings:
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model, pe_config(cfg, spec)).to(device)
        timers[label(cfg, spec)] = train_step_timer(model, model.loss, x, y, compile=cfg.train.compile)
    med = interleaved_medians(timers, cfg.speed_rounds, cfg.speed_steps, warmup=2)
    return pd.DataFrame([{"experiment": "speed", "encoding": n, "step_time_s": t, "tokens_per_s": x.numel() / t,
                          "rounds": cfg.speed_rounds, "steps_per_round": cfg.speed_steps} for n, t in med.items()])


def run(cfg: LMExtrapolationConfig, corpus: Corpus | None = None, progress: bool = True) -> pd.DataFrame:
    """Train every encoding and evaluate it by length; one failed model never stops the others."""
    corpus = corpus or load_corpus(cfg.data)
    check(cfg, corpus)
    frames = []
    for spec in cfg.encodings:
        lab = label(cfg, spec)
        try:
            model, tr = train_one(cfg, corpus, spec, progress)
        except TrainingDiverged as e:
            frames.append(pd.DataFrame([{"experiment": "train", "encoding": lab, "status": "failed",
                                         "error": str(e)}]))
            continue
        torch.manual_seed(cfg.train.seed + 1)  # randomized positions at test time are drawn too
        ev = by_length(model, corpus.test, cfg.lengths, cfg.eval.max_tokens, sliding_stride=cfg.eval.sliding_stride,
                       sliding_tokens=cfg.eval.sliding_tokens, batch_tokens=cfg.batch_tokens,
                       max_position=model.pe.max_positions if spec.name == "learned" else None)
        ev.insert(0, "encoding", lab)
        ev.insert(0, "experiment", "eval")
        ev["train_length"] = cfg.train.seq_len
        frames.append(ev)
        curve = pd.DataFrame({"experiment": "train_curve", "encoding": lab,
                              "step": range(1, len(tr.losses) + 1), "loss": tr.losses}).iloc[::10]
        frames.append(curve)
        frames.append(pd.DataFrame([{"experiment": "train", "encoding": lab, "status": tr.status,
                                     "tokens_per_s": tr.tokens_per_s, "step_time_s": tr.step_time_s,
                                     "wall_s": tr.wall_s, "steps": tr.steps,
                                     "final_loss": tr.losses[-1] if tr.losses else float("nan"),
                                     "params": model.num_params()}]))
    if cfg.speed_rounds:
        frames.append(speed_benchmark(cfg, corpus))
    return pd.concat(frames, ignore_index=True)


# Press et al. 2022, Table 2-5 (WikiText-103, L = 512), perplexity at 512 / 1012 / 3512 / 15512.
PAPER_PPL = pd.DataFrame(
    [("sinusoidal", 20.05, 43.54, 178.97, 406.01), ("rope", 20.07, 21.37, 35.54, 79.25),
     ("t5", 19.65, 18.79, 22.91, float("nan")), ("alibi", 19.73, 18.73, 18.40, 18.31)],
    columns=["encoding", "512", "1012", "3512", "15512"])
# Press et al. 2022, Figure 1 / Table 1: training speed at L = 512 (words per second, one V100).
PAPER_WPS = {"sinusoidal": 28.5e3, "rope": 20.0e3, "t5": 14.4e3, "alibi": 28.3e3}


def bpb_table(results: pd.DataFrame, protocol: str = "nonoverlapping") -> pd.DataFrame:
    """Bits per byte, encodings x evaluation lengths."""
    ev = select(results, experiment="eval", protocol=protocol)
    return ev.pivot_table(index="encoding", columns="length", values="bpb", sort=False)


def training_speed(results: pd.DataFrame) -> tuple[pd.Series, str]:
    """Tokens/s per encoding and where they come from: the interleaved speed benchmark when it ran, else
    the training logs (each model timed alone, at its own time)."""
    for experiment, source in (("speed", "interleaved benchmark"), ("train", "training logs")):
        rows = select(results, experiment=experiment)
        if "tokens_per_s" in rows and rows["tokens_per_s"].notna().any():
            return rows.set_index("encoding")["tokens_per_s"].dropna(), source
    return pd.Series(dtype=float), "no data"


def speed_table(results: pd.DataFrame) -> pd.DataFrame:
    """Training tokens/s per encoding, relative to sinusoidal, beside the paper's words/s ratios."""
    tps, source = training_speed(results)
    if tps.empty:
        return pd.DataFrame()
    base = tps.get("sinusoidal", float("nan"))
    out = pd.DataFrame({"tokens_per_s": tps, "relative_to_sinusoidal": tps / base, "measured_by": source})
    out["paper_words_per_s"] = [PAPER_WPS.get(e, float("nan")) for e in out.index]
    out["paper_relative"] = out["paper_words_per_s"] / PAPER_WPS["sinusoidal"]
    return out


# ----------------------------------------------------------------------------- claims


def _bpb(results: pd.DataFrame, enc: str, protocol: str = "nonoverlapping") -> pd.Series:
    ev = select(results, experiment="eval", encoding=enc, protocol=protocol)
    return ev.set_index("length")["bpb"].dropna().sort_index()


def _ratio_claim(results: pd.DataFrame, enc: str, mult: int, protocol: str = "nonoverlapping") -> tuple[float, str]:
    s = _bpb(results, enc, protocol)
    if s.empty:
        return float("nan"), "no data"
    base_len = s.index.min()
    target = base_len * mult
    if target not in s.index:
        return float("nan"), f"no {mult}L evaluation"
    r = float(s[target] / s[base_len])
    return r, f"bpb {s[base_len]:.3f} at L -> {s[target]:.3f} at {mult}L (x{r:.3f})"


@claim("alibi_flat_to_16L", notebook=NAME, paper="Press et al. 2022, Fig. 1, Table 2", min_profile="cpu",
       statement="ALiBi trained at L keeps its loss when evaluated up to 16L",
       paper_value="ppl 19.73 at L=512 -> 18.31 at 15512 (~30L)",
       threshold="max over lengths L..16L of ALiBi bpb <= 1.02 x its bpb at L")
def _alibi_flat(df: pd.DataFrame) -> Measured:
    s = _bpb(df, "alibi")
    if len(s) < 2:
        return Measured("no data", None)
    r = float(s.max() / s.iloc[0])
    return Measured(f"bpb {s.iloc[0]:.3f} at L, worst {s.max():.3f} (x{r:.3f}) up to length {int(s.index.max())}", r <= 1.02)


@claim("sinusoidal_degrades_at_2L", notebook=NAME, paper="Press et al. 2022, Fig. 1, Table 2", min_profile="cpu",
       statement="sinusoidal embeddings degrade already at 2L",
       paper_value="ppl 20.05 at 512 -> 43.54 at 1012",
       threshold="sinusoidal bpb at 2L >= 1.05 x its bpb at L")
def _sin_2l(df: pd.DataFrame) -> Measured:
    r, text = _ratio_claim(df, "sinusoidal", 2)
    return Measured(text, None if r != r else r >= 1.05)


@claim("rotary_degrades_beyond_2L", notebook=NAME, paper="Press et al. 2022, Fig. 1, Table 2", min_profile="cpu",
       statement="rotary holds near L but degrades well beyond 2L",
       paper_value="ppl 20.07 at 512 -> 21.37 at 1012 -> 35.54 at 3512",
       threshold="rotary bpb at 8L >= 1.05 x its bpb at L")
def _rope_8l(df: pd.DataFrame) -> Measured:
    r, text = _ratio_claim(df, "rope", 8)
    return Measured(text, None if r != r else r >= 1.05)


@claim("t5_holds_to_2L", notebook=NAME, paper="Press et al. 2022, Fig. 1, Table 2", min_profile="cpu",
       statement="the T5 bias extrapolates to at least 2L",
       paper_value="ppl 19.65 at 512 -> 18.79 at 1012",
       threshold="T5 bpb at 2L <= 1.02 x its bpb at L")
def _t5_2l(df: pd.DataFrame) -> Measured:
    r, text = _ratio_claim(df, "t5", 2)
    return Measured(text, None if r != r else r <= 1.02)


@claim("alibi_sliding_flat", notebook=NAME, paper="Press et al. 2022, App. B, Fig. 7", min_profile="cpu",
       statement="with a sliding window, ALiBi's loss stays flat beyond L",
       paper_value="sliding-window (stride 1) ppl flat from L to ~10L",
       threshold="max over lengths of ALiBi sliding-window bpb <= 1.02 x its value at L")
def _alibi_sliding(df: pd.DataFrame) -> Measured:
    s = _bpb(df, "alibi", "sliding")
    if len(s) < 2:
        return Measured("no sliding-window data (eval.sliding_stride = 0)", None)
    r = float(s.max() / s.iloc[0])
    return Measured(f"sliding bpb {s.iloc[0]:.3f} at L, worst {s.max():.3f} (x{r:.3f})", r <= 1.02)


@claim("alibi_in_distribution_vs_sinusoidal", notebook=NAME, paper="Press et al. 2022, Table 2", min_profile="cpu",
       statement="at the training length ALiBi is no worse than sinusoidal",
       paper_value="ppl 19.73 (ALiBi) vs 20.05 (sinusoidal) at L = 512",
       threshold="ALiBi bpb at L <= sinusoidal bpb at L + 0.02")
def _alibi_vs_sin(df: pd.DataFrame) -> Measured:
    a, s = _bpb(df, "alibi"), _bpb(df, "sinusoidal")
    if a.empty or s.empty:
        return Measured("no data", None)
    return Measured(f"ALiBi {a.iloc[0]:.3f} vs sinusoidal {s.iloc[0]:.3f} bpb", bool(a.iloc[0] <= s.iloc[0] + 0.02))


@claim("speed_ordering", notebook=NAME, paper="Press et al. 2022, Fig. 1 (right), sec. 4.1", min_profile="cpu",
       statement="ALiBi trains about as fast as sinusoidal and faster than T5",
       paper_value="words/s: sinusoidal 28.5k, ALiBi 28.3k, rotary 20.0k, T5 14.4k",
       threshold="ALiBi tokens/s >= 0.9 x sinusoidal's and > T5's")
def _speed(df: pd.DataFrame) -> Measured:
    t, source = training_speed(df)
    if t.empty:
        return Measured("no data", None)
    if not {"alibi", "sinusoidal", "t5"} <= set(t.index):
        return Measured("needs alibi, sinusoidal and t5", None)
    ok = t["alibi"] >= 0.9 * t["sinusoidal"] and t["alibi"] > t["t5"]
    return Measured(f"tokens/s ALiBi {t['alibi']:.0f}, sinusoidal {t['sinusoidal']:.0f}, T5 {t['t5']:.0f} "
                    f"(ALiBi / sinusoidal {t['alibi'] / t['sinusoidal']:.2f}; {source})", bool(ok))
