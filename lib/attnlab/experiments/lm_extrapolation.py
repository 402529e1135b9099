"""Notebook 02: train short, test long (Press et al. 2022, Figure 1 and Tables 2-7).

Causal byte-level LMs, one per positional encoding, trained at length L and evaluated at
L, 2L, 4L, 8L, 16L with non-overlapping windows and a sliding window. Byte-level losses are
small numbers, so claims are stated as ratios of bits per byte, fixed below before any run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from pydantic import Field, model_validator
from typing_extensions import Self

from ..bench.dryrun import Planned
from ..bench.timing import interleaved_times
from ..bench.train import train_step_timer
from ..claims import Condition, Measured, claim, select, unit_matrix
from ..config import Config, Seeds, load, one_of, replace
from ..data import Corpus, DataConfig, check_sizes, load_corpus
from ..errors import ConfigError
from ..evaluate import EvalConfig, by_length, segment_rows
from ..memo import memoized
from ..model import ModelConfig, Transformer, build_model
from ..positional import ENCODINGS, PESpec
from ..stats import Estimate, crossed_bootstrap
from ..train import TrainConfig, TrainingDiverged, lm_batches, train_or_load

NAME = "02_lm_length_extrapolation"


class LMExtrapolationConfig(Config):
    """Train causal LMs at length L (train.seq_len), evaluate at multiples of L."""

    encodings: tuple[PESpec, ...] = Field(
        default_factory=lambda: ("sinusoidal", "learned", "rope", "xpos", "alibi", "t5", "kerple", "fire", "none",
                                 "randomized", "shaw", {"name": "shaw", "values": True}, "relative_key_query", "cpe"),
        description="one model per entry: a name, or {name: ..., parameter: value} (e.g. {name: t5, num_buckets: 64})")
    seeds: Seeds = Field((0, 1, 2), description="every model is trained once per seed (train.seed is replaced)")
    randomized_base: one_of(ENCODINGS.names) = Field("rope", description="the encoding `randomized` wraps")
    blockwise_eval: tuple[str, ...] = Field(("xpos",), description="encodings (labels) also evaluated with "
                                            "blockwise causal attention in blocks of L, as '<label>+bca' (Sun et al.; "
                                            "the default: xpos, where it is among the encodings)")
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
        unknown = [b for b in self.blockwise_eval if b not in labels]
        if unknown and "blockwise_eval" in self.model_fields_set:  # the default applies where xpos is trained
            raise ConfigError(f"blockwise_eval = {list(self.blockwise_eval)}: {unknown[0]!r} is not one of the "
                              f"encodings; valid choices: {', '.join(labels)}")
        return self

    @property
    def lengths(self) -> list[int]:
        return sorted(self.eval.lengths)


def load_config(profile: str) -> LMExtrapolationConfig:
    """Notebook 02's config at `profile` (notebooks 06-07 reuse its models)."""
    return load(LMExtrapolationConfig, NAME, profile)


def label(cfg: LMExtrapolationConfig, spec: PESpec) -> str:
    """The name a model goes by in tables and figures (also for notebook 08's config: the same fields): the
    encoding's name, with the parameters that differ from its defaults where two entries share a name."""
    if spec.name == "randomized":
        return f"randomized({cfg.randomized_base})"
    shared = sum(PESpec.model_validate(e).name == spec.name for e in cfg.encodings) > 1
    return spec.label() if shared else spec.name


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


def preflight(cfg: LMExtrapolationConfig) -> None:
    """Everything about the input that can fail, checked before a notebook kernel starts: the corpus loads
    (exists, not empty, reachable) and is large enough for the training and evaluation lengths."""
    check(cfg, load_corpus(cfg.data))


def train_one(cfg: LMExtrapolationConfig, corpus: Corpus, spec: PESpec | str, progress: bool = True,
              seed: int | None = None):  # noqa: ANN201
    """Train (or load from the model cache, keyed by seed) the LM with encoding `spec`; returns
    (model, TrainResult). `seed` defaults to the first of `cfg.seeds`."""
    tcfg = replace(cfg.train, seed=cfg.seeds[0] if seed is None else seed)
    torch.manual_seed(tcfg.seed)
    pe = pe_config(cfg, spec)
    model = build_model(cfg.model, pe)
    return train_or_load(model, lm_batches(corpus.train, tcfg.batch_size, tcfg.seq_len), tcfg,
                         cfg.model, pe, cfg.data, progress=progress, desc=f"{label(cfg, pe)} seed {tcfg.seed}")


def unigram_bpb(data: torch.Tensor) -> float:
    """Bits per byte of the byte-frequency (unigram) model of a split: the level a model must beat to have
    learned anything beyond byte counts."""
    p = torch.bincount(data.long().flatten(), minlength=256).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log2()).sum())


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
    times = interleaved_times(timers, cfg.speed_rounds, cfg.speed_steps, warmup=2)
    rows = []
    for n, per_round in times.items():
        t = float(np.median([v for r in per_round for v in r]))
        rows.append({"experiment": "speed", "encoding": n, "step_time_s": t, "tokens_per_s": x.numel() / t,
                     "rounds": cfg.speed_rounds, "steps_per_round": cfg.speed_steps})
        rows += [{"experiment": "speed_round", "encoding": n, "round": i, "step_time_s": float(np.median(r))}
                 for i, r in enumerate(per_round)]
    return pd.DataFrame(rows)


def evaluate_by_length(cfg: LMExtrapolationConfig, corpus: Corpus, model: Transformer, lab: str, seed: int,
                       learned: bool = False) -> list[pd.DataFrame]:
    """Bits per byte of one model at every evaluation length: `eval` rows and their `eval_segment` rows."""
    torch.manual_seed(seed + 1)  # randomized positions at test time are drawn too
    ev = by_length(model, corpus.test, cfg.lengths, cfg.eval.max_tokens, sliding_stride=cfg.eval.sliding_stride,
                   sliding_tokens=cfg.eval.sliding_tokens, batch_tokens=cfg.batch_tokens,
                   max_position=model.pe.max_positions if learned else None)
    ev.insert(0, "seed", seed)
    ev.insert(0, "encoding", lab)
    ev.insert(0, "experiment", "eval")
    ev["train_length"] = cfg.train.seq_len
    seg = segment_rows(ev).assign(experiment="eval_segment")
    return [ev.drop(columns=["segment_nll"], errors="ignore"), seg]


def with_blockwise(cfg: LMExtrapolationConfig, model: Transformer) -> Transformer:
    """The trained model with blockwise causal attention in blocks of L (Sun et al. 2023, sec. 3.3): the same
    weights, only the attention's support changes."""
    mcfg = replace(cfg.model, attention={"name": "blockwise", "block": cfg.train.seq_len})
    out = build_model(mcfg, model.pe_spec)
    out.load_state_dict(model.state_dict())
    return out.to(next(model.parameters()).device).eval()


@memoized
def run(cfg: LMExtrapolationConfig, corpus: Corpus | None = None, progress: bool = True) -> pd.DataFrame:
    """Train every encoding once per seed and evaluate it by length on the same segments of the test split
    (paired comparisons); one failed model never stops the others."""
    corpus = corpus or load_corpus(cfg.data)
    check(cfg, corpus)
    frames = [pd.DataFrame([{"experiment": "corpus", "unigram_bpb": unigram_bpb(corpus.train),
                             "train_length": cfg.train.seq_len}])]
    for spec in cfg.encodings:
        lab = label(cfg, spec)
        for seed in cfg.seeds:
            try:
                model, tr = train_one(cfg, corpus, spec, progress, seed)
            except TrainingDiverged as e:
                frames.append(pd.DataFrame([{"experiment": "train", "encoding": lab, "seed": seed,
                                             "status": "failed", "error": str(e)}]))
                continue
            frames += evaluate_by_length(cfg, corpus, model, lab, seed, learned=spec.name == "learned")
            if lab in cfg.blockwise_eval:  # the same weights with blockwise causal attention (Sun et al.)
                frames += evaluate_by_length(cfg, corpus, with_blockwise(cfg, model), f"{lab}+bca", seed)
            curve = pd.DataFrame({"experiment": "train_curve", "encoding": lab, "seed": seed,
                                  "step": range(1, len(tr.losses) + 1), "loss": tr.losses}).iloc[::10]
            frames.append(curve)
            frames.append(pd.DataFrame([{"experiment": "train", "encoding": lab, "seed": seed, "status": tr.status,
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


def eval_rows(results: pd.DataFrame, protocol: str = "nonoverlapping") -> pd.DataFrame:
    """Evaluation rows (one per encoding, seed and length) with a bits-per-byte value; empty when every model
    failed."""
    ev = select(results, experiment="eval", protocol=protocol)
    return ev.dropna(subset=["bpb"]) if "bpb" in ev else ev.iloc[0:0]


def bpb_table(results: pd.DataFrame, protocol: str = "nonoverlapping") -> pd.DataFrame:
    """Bits per byte (mean over seeds), encodings x evaluation lengths."""
    ev = eval_rows(results, protocol)
    return ev.pivot_table(index="encoding", columns="length", values="bpb", sort=False) if len(ev) else pd.DataFrame()


def failures(results: pd.DataFrame) -> pd.DataFrame:
    """The models that failed (encoding, seed, error)."""
    f = select(results, experiment="train", status="failed")
    return f[[c for c in ("encoding", "seed", "error") if c in f]]


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
# Each statistic is computed on bits per byte per (seed, evaluation segment); its 95% interval resamples
# seeds and segments (`stats.crossed_bootstrap`); segments are the same for every model and length, so
# ratios and differences are paired. Precondition of every length claim: each seed's model has learned
# its training length (bpb at L at least FIT_MARGIN bits below the byte-unigram entropy of the corpus).

FIT_MARGIN = 0.5


def segment_matrix(results: pd.DataFrame, columns: list[tuple[str, int]], protocol: str = "nonoverlapping"
                   ) -> np.ndarray:
    """Bits per byte (seeds, segments, len(columns)) for each (encoding, length) of `columns`; only seeds
    and segments present for every column."""
    return unit_matrix(select(results, experiment="eval_segment", protocol=protocol), ["encoding", "length"],
                       columns, "bpb", "segment")


def train_length(results: pd.DataFrame) -> int | None:
    """L, the training length of the run's models."""
    ev = select(results, experiment="eval")
    return int(ev["train_length"].iloc[0]) if not ev.empty else None


def fit_problem(results: pd.DataFrame, *encodings: str) -> str:
    """Why the models of `encodings` say nothing beyond L ('' when each seed has learned L)."""
    failed = select(results, experiment="train", status="failed")
    for enc in encodings:
        bad = select(failed, encoding=enc)
        if not bad.empty:
            return f"{enc}: training failed for {len(bad)} seed(s) ({bad['error'].iloc[0]})"
    corpus, ev = select(results, experiment="corpus"), select(results, experiment="eval", protocol="nonoverlapping")
    L = train_length(results)
    if corpus.empty or L is None:
        return "no corpus statistics or no evaluation"
    limit = float(corpus["unigram_bpb"].iloc[0]) - FIT_MARGIN
    for enc in encodings:
        at_l = select(ev, encoding=enc, length=L)["bpb"]
        if at_l.empty:
            return f"{enc}: not evaluated"
        if (at_l > limit).any():
            return (f"{enc} does not fit its training length: bpb at L up to {at_l.max():.3f}, needs <= {limit:.3f} "
                    f"(byte-unigram entropy - {FIT_MARGIN})")
    return ""


def _ratio_stat(ks: list[int]):  # noqa: ANN202
    """max over columns ks of mean(column) / mean(column 0)."""
    return lambda d: float(max(np.mean(d[..., k]) / np.mean(d[..., 0]) for k in ks))


def length_ratio(results: pd.DataFrame, enc: str, mults: list[int], protocol: str = "nonoverlapping"
                 ) -> tuple[Estimate | None, str]:
    """max over `mults` of enc's bpb at m*L / at L, with its interval; or None and why."""
    L = train_length(results)
    if L is None:
        return None, "no evaluation"
    ev = select(results, experiment="eval", encoding=enc, protocol=protocol)
    lengths = [L * m for m in mults if L * m in set(ev["length"])]
    if len(lengths) < len(mults):
        return None, f"{enc}: no evaluation at {', '.join(f'{m}L' for m in mults)} ({protocol})"
    d = segment_matrix(results, [(enc, L)] + [(enc, n) for n in lengths], protocol)
    if d.size == 0:
        return None, f"{enc}: no per-segment data ({protocol})"
    return crossed_bootstrap(d, _ratio_stat(list(range(1, len(lengths) + 1)))), ""


def _length_claim(df: pd.DataFrame, enc: str, mults: list[int], op: str, thr: float, what: str,
                  protocol: str = "nonoverlapping") -> Measured:
    if (why := fit_problem(df, enc)):
        return Measured.missing(why)
    est, why = length_ratio(df, enc, mults, protocol)
    if est is None:
        return Measured.missing(why)
    return Measured(f"{enc} {what} x{est.text()} ({est.n_seeds} seeds x {est.n_units} segments)",
                    (Condition(what, est, op, thr),))


@claim("alibi_flat_to_16L", notebook=NAME, paper="Press et al. 2022, Fig. 1, Table 2", min_profile="cpu",
       statement="ALiBi trained at L keeps its loss when evaluated up to 16L",
       paper_value="ppl 19.73 at L=512 -> 18.31 at 15512 (~30L)",
       threshold="95% interval of max over 2L..16L of ALiBi bpb / its bpb at L wholly <= 1.02")
def _alibi_flat(df: pd.DataFrame) -> Measured:
    return _length_claim(df, "alibi", [2, 4, 8, 16], "<=", 1.02, "worst bpb / bpb at L")


@claim("sinusoidal_degrades_at_2L", notebook=NAME, paper="Press et al. 2022, Fig. 1, Table 2", min_profile="cpu",
       statement="sinusoidal embeddings degrade already at 2L",
       paper_value="ppl 20.05 at 512 -> 43.54 at 1012 (loss x1.26)",
       threshold="95% interval of sinusoidal bpb at 2L / at L wholly >= 1.05")
def _sin_2l(df: pd.DataFrame) -> Measured:
    return _length_claim(df, "sinusoidal", [2], ">=", 1.05, "bpb 2L / L")


@claim("rotary_holds_near_2L", notebook=NAME, paper="Press et al. 2022, Fig. 1, Table 2", min_profile="cpu",
       statement="rotary holds near L: at 2L its loss has not yet degraded",
       paper_value="ppl 20.07 at 512 -> 21.37 at 1012 (loss x1.02)",
       threshold="95% interval of rotary bpb at 2L / at L wholly <= 1.05")
def _rope_2l(df: pd.DataFrame) -> Measured:
    return _length_claim(df, "rope", [2], "<=", 1.05, "bpb 2L / L")


@claim("rotary_degrades_beyond_2L", notebook=NAME, paper="Press et al. 2022, Fig. 1, Table 2", min_profile="cpu",
       statement="rotary degrades well beyond 2L",
       paper_value="ppl 20.07 at 512 -> 35.54 at 3512 (loss x1.19)",
       threshold="95% interval of rotary bpb at 8L / at L wholly >= 1.05")
def _rope_8l(df: pd.DataFrame) -> Measured:
    return _length_claim(df, "rope", [8], ">=", 1.05, "bpb 8L / L")


@claim("t5_holds_to_2L", notebook=NAME, paper="Press et al. 2022, Fig. 1, Table 2", min_profile="cpu",
       statement="the T5 bias extrapolates to 2L: its loss at 2L is not above its loss at L (the paper: it falls)",
       paper_value="ppl 19.65 at 512 -> 18.79 at 1012 (loss x0.985)",
       threshold="95% interval of T5 bpb at 2L / at L wholly <= 1.00")
def _t5_2l(df: pd.DataFrame) -> Measured:
    return _length_claim(df, "t5", [2], "<=", 1.00, "bpb 2L / L")


@claim("alibi_sliding_flat", notebook=NAME, paper="Press et al. 2022, App. B, Fig. 7", min_profile="cpu",
       statement="with a sliding window, ALiBi's loss stays flat beyond L",
       paper_value="sliding-window (stride 1) ppl flat from L to ~10L",
       threshold="95% interval of max over 2L..16L of ALiBi sliding-window bpb / its value at L wholly <= 1.02")
def _alibi_sliding(df: pd.DataFrame) -> Measured:
    if select(df, experiment="eval", protocol="sliding").empty:
        return Measured.missing("no sliding-window data (eval.sliding_stride = 0)")
    return _length_claim(df, "alibi", [2, 4, 8, 16], "<=", 1.02, "worst sliding bpb / at L", "sliding")


@claim("alibi_in_distribution_vs_sinusoidal", notebook=NAME, paper="Press et al. 2022, Table 2", min_profile="cpu",
       statement="at the training length ALiBi is no worse than sinusoidal",
       paper_value="ppl 19.73 (ALiBi) vs 20.05 (sinusoidal) at L = 512",
       threshold="95% interval of ALiBi bpb - sinusoidal bpb at L wholly <= +0.02")
def _alibi_vs_sin(df: pd.DataFrame) -> Measured:
    if (why := fit_problem(df, "alibi", "sinusoidal")):
        return Measured.missing(why)
    L = train_length(df)
    d = segment_matrix(df, [("sinusoidal", L), ("alibi", L)]) if L else np.empty((0, 0, 2))
    if d.size == 0:
        return Measured.missing("needs alibi and sinusoidal evaluated at L")
    est = crossed_bootstrap(d, lambda a: float(np.mean(a[..., 1]) - np.mean(a[..., 0])))
    return Measured(f"ALiBi - sinusoidal {est.text('+.3f')} bpb at L ({est.n_seeds} seeds x {est.n_units} segments)",
                    (Condition("ALiBi - sinusoidal bpb", est, "<=", 0.02),))


@claim("cpe_holds_to_4L", notebook=NAME, paper="Chu et al. 2023 (CPVT), sec. 3-4", min_profile="cpu",
       statement="a conditional position encoding (PEG) generalizes to inputs longer than those it was trained on",
       paper_value="CPE keeps ImageNet accuracy at input sizes larger than the training size without fine-tuning, "
                   "where learned absolute encodings must be interpolated (the paper's claim, images)",
       threshold="95% interval of max over 2L, 4L of cpe bpb / its bpb at L wholly <= 1.05")
def _cpe_holds(df: pd.DataFrame) -> Measured:
    return _length_claim(df, "cpe", [2, 4], "<=", 1.05, "worst bpb / bpb at L")


@claim("xpos_bca_holds_to_4L", notebook=NAME, paper="Sun et al. 2023 (XPos / LEX), sec. 3.3, Table 2",
       min_profile="cpu",
       statement="XPos with blockwise causal attention at inference keeps its loss beyond the training length",
       paper_value="LEX (XPos + blockwise causal attention) trained at 1024: perplexity does not rise when "
                   "tested at 2048 and 4096",
       threshold="95% interval of max over 2L, 4L of xpos+bca bpb / its bpb at L wholly <= 1.02")
def _xpos_bca(df: pd.DataFrame) -> Measured:
    if (why := fit_problem(df, "xpos")):
        return Measured.missing(why)
    return _length_claim(df, "xpos+bca", [2, 4], "<=", 1.02, "worst bpb / bpb at L")


SHAW_VALUES = "shaw(values=True)"
SHAW_EQUIVALENCE = 0.02  # bpb: "no better, no worse" within this margin (fixed before any run)


@claim("shaw_values_add_nothing", notebook=NAME, paper="Shaw et al. 2018, Table 4, sec. 4.3", min_profile="cpu",
       statement="relative value vectors add nothing to relative keys: at L the two models are equally good",
       paper_value="EN-DE dev BLEU with a^K alone about that with a^K and a^V (the paper: keys alone may suffice)",
       threshold=f"95% interval of shaw(values) bpb - shaw (keys) bpb at L wholly within +-{SHAW_EQUIVALENCE}")
def _shaw_values(df: pd.DataFrame) -> Measured:
    if (why := fit_problem(df, "shaw", SHAW_VALUES)):
        return Measured.missing(why)
    L = train_length(df)
    d = segment_matrix(df, [("shaw", L), (SHAW_VALUES, L)]) if L else np.empty((0, 0, 2))
    if d.size == 0:
        return Measured.missing("needs shaw and shaw(values=True) evaluated at L")
    est = crossed_bootstrap(d, lambda a: float(np.mean(a[..., 1]) - np.mean(a[..., 0])))
    return Measured(f"keys + values - keys only {est.text('+.3f')} bpb at L ({est.n_seeds} seeds x "
                    f"{est.n_units} segments)",
                    (Condition("values - keys bpb", est, ">=", -SHAW_EQUIVALENCE),
                     Condition("values - keys bpb", est, "<=", SHAW_EQUIVALENCE)))


SPEED_VS_SINUSOIDAL = 0.9  # "about as fast": the paper's 28.3k vs 28.5k
SPEED_VS_T5 = 1.2  # "faster than T5" by a margin timing noise cannot make (the paper: 1.97x)


@claim("speed_ordering", notebook=NAME, paper="Press et al. 2022, Fig. 1 (right), sec. 4.1", min_profile="cpu",
       kind="measurement",
       statement="ALiBi trains about as fast as sinusoidal and clearly faster than T5",
       paper_value="words/s: sinusoidal 28.5k, ALiBi 28.3k (x0.99), T5 14.4k (ALiBi x1.97)",
       threshold=f"95% intervals over interleaved rounds: ALiBi / sinusoidal tokens/s wholly >= {SPEED_VS_SINUSOIDAL}, "
                 f"ALiBi / T5 wholly >= {SPEED_VS_T5}")
def _speed(df: pd.DataFrame) -> Measured:
    r = select(df, experiment="speed_round")
    if r.empty:
        return Measured.missing("no interleaved speed benchmark (speed_rounds = 0)")
    wide = r.pivot_table(index="round", columns="encoding", values="step_time_s")
    if not {"alibi", "sinusoidal", "t5"} <= set(wide.columns):
        return Measured.missing("needs alibi, sinusoidal and t5 in the speed benchmark")
    d = wide[["alibi", "sinusoidal", "t5"]].to_numpy()[None]  # (1, rounds, 3)
    vs_sin = crossed_bootstrap(d, lambda a: float(np.median(a[..., 1]) / np.median(a[..., 0])))
    vs_t5 = crossed_bootstrap(d, lambda a: float(np.median(a[..., 2]) / np.median(a[..., 0])))
    return Measured(f"ALiBi / sinusoidal x{vs_sin.text('.2f')}, ALiBi / T5 x{vs_t5.text('.2f')} "
                    f"({vs_sin.n_units} interleaved rounds)",
                    (Condition("ALiBi / sinusoidal", vs_sin, ">=", SPEED_VS_SINUSOIDAL),
                     Condition("ALiBi / T5", vs_t5, ">=", SPEED_VS_T5)), seeded=False)


def dry_run_plan(cfg: LMExtrapolationConfig, profile: str = "gpu") -> list[Planned]:
    """Every model of this notebook at its training and longest evaluation shapes (for `bench.dryrun`)."""
    def longest(e: PESpec) -> int:  # a learned table is evaluated up to its size only (`run` skips beyond)
        return cfg.train.seq_len if e.name == "learned" else max(cfg.lengths)

    return [Planned(label(cfg, e), cfg.model, pe_config(cfg, e), cfg.train.batch_size, cfg.train.seq_len,
                    max(1, cfg.batch_tokens // longest(e)), longest(e)) for e in cfg.encodings]
