"""Notebook 03: algorithmic length generalization (Ruoss et al. 2023; Deletang et al. 2023; Kazemnejad et al. 2023).

Two protocols on one harness, both trained by attnlab.train:

* **encoder with an output tape** (Deletang / Ruoss): the input followed by ``output_length``
  blank tokens; predictions are read on the tape; per-token accuracy; trained on lengths
  1..N, scored as the mean accuracy over lengths N+1..M never seen in training;
* **decoder** (Kazemnejad): prompt, separator, answer; exact match per length; PEs ranked per
  (task, length) and summarised by mean reciprocal rank (MRR).

Every (protocol, task, PE, randomized, seed) cell is cached on disk when it finishes, so an
interrupted grid resumes; cells run in parallel processes when ``jobs > 1``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import pandas as pd
import torch
from pydantic import Field, model_validator
from typing_extensions import Self

from ..attention import AttentionSpec
from ..bench.dryrun import Planned
from ..claims import Condition, Measured, claim
from ..config import Config, Seeds, one_of, replace, to_dict, validate
from ..errors import ConfigError
from ..evaluate import masked_accuracy
from ..io import atomic_write_json, read_json
from ..model import ModelConfig, build_model
from ..positional import ENCODINGS
from ..stats import crossed_bootstrap
from ..tasks.base import Task, get_task, task_names
from ..train import TrainConfig, TrainingDiverged, cache_key, cache_root, train_or_load

NAME = "03_algorithmic_length_generalization"


def _task_choices() -> list[str]:
    return task_names()


def _pe_choices() -> list[str]:
    return ENCODINGS.names()


def attention_label(cfg: AlgorithmicConfig, v: AttentionSpec) -> str:
    """An attention variant's name: its registry name, with the parameters that differ from the defaults."""
    return AttentionSpec.model_validate(v).label()


class AlgorithmicConfig(Config):
    """The task x PE grid of both protocols."""

    encoder_tasks: tuple[one_of(_task_choices), ...] = Field(default_factory=lambda: tuple(
        task_names("regular") + task_names("dcf") + task_names("cs")))
    encoder_pes: tuple[one_of(_pe_choices), ...] = ("none", "sinusoidal", "rope", "alibi")
    randomized: tuple[bool, ...] = (False, True)
    train_max_length: int = Field(40, ge=1, description="encoder: train on lengths 1..N")
    test_max_length: int = Field(500, ge=2, description="encoder: test on lengths N+1..M")
    test_lengths: int = Field(20, ge=1, description="number of test lengths between N+1 and M")
    decoder_tasks: tuple[one_of(_task_choices), ...] = Field(default_factory=lambda: tuple(task_names("decoder")))
    decoder_pes: tuple[one_of(_pe_choices), ...] = ("none", "t5", "alibi", "rope", "sinusoidal")
    decoder_train_max_length: int = Field(20, ge=1)
    decoder_steps: int = Field(0, ge=0, description="training steps of decoder models (0: train.steps)")
    decoder_test_max_length: int = Field(40, ge=2)
    eval_samples: int = Field(256, ge=1, description="instances per test length")
    seeds: Seeds = (0, 1, 2)
    learning_rates: tuple[Annotated[float, Field(gt=0)], ...] = Field((),
                                             description="empty: train.lr; several: report the best (Ruoss et al.)")
    attention_variants: tuple[AttentionSpec, ...] = Field(
        default_factory=lambda: ("sdpa", "key_value", {"name": "key_value", "pos_dim": 10}),
        description="encoder models that differ only in their attention, on attention_tasks (Borji 2023 compares "
                    "QKV with KV attention, with and without its 2-D positions, on reversing and sorting); "
                    "empty: none")
    attention_tasks: tuple[one_of(_task_choices), ...] = Field(("reverse_string", "bucket_sort"),
                                                               description="encoder tasks of that comparison")
    attention_pe: one_of(_pe_choices) = Field("sinusoidal", description="the encoding of that comparison "
                                              "(Borji's code adds sinusoids to the inputs)")
    jobs: int = Field(2, ge=1, description="grid cells trained in parallel processes")
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(d_model=64, n_layers=5, n_heads=8, d_ff=256))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=10000, batch_size=128, lr=1e-4, warmup=0,
                                                                    weight_decay=0.0, checkpoint_every=1000))

    @model_validator(mode="after")
    def _check(self) -> Self:
        for t in self.encoder_tasks:
            if t in task_names("decoder"):
                raise ConfigError(f"encoder_tasks: {t!r} is a decoder task; valid: "
                                  f"{', '.join(n for n in task_names() if n not in task_names('decoder'))}")
        for t in self.decoder_tasks:
            if t not in task_names("decoder"):
                raise ConfigError(f"decoder_tasks: {t!r} is not a decoder task; valid: {', '.join(task_names('decoder'))}")
        if self.test_max_length <= self.train_max_length:
            raise ConfigError(f"test_max_length = {self.test_max_length}: must exceed train_max_length = "
                              f"{self.train_max_length}")
        if self.decoder_test_max_length <= self.decoder_train_max_length:
            raise ConfigError(f"decoder_test_max_length = {self.decoder_test_max_length}: must exceed "
                              f"decoder_train_max_length = {self.decoder_train_max_length}")
        for t in self.attention_tasks:
            if t in task_names("decoder"):
                raise ConfigError(f"attention_tasks: {t!r} is a decoder task; valid: "
                                  f"{', '.join(n for n in task_names() if n not in task_names('decoder'))}")
        labels = [attention_label(self, v) for v in self.attention_variants]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"attention_variants = {labels}: duplicates")
        if "randomized" in self.encoder_pes or "randomized" in self.decoder_pes:
            raise ConfigError("encoder_pes/decoder_pes: use `randomized: [false, true]` to wrap each PE, "
                              "not the name 'randomized'")
        return self


# ----------------------------------------------------------------------------- data for the two protocols


@dataclass(frozen=True)
class Layout:
    """How a task's symbols map to model tokens for one protocol."""

    protocol: str  # encoder | decoder
    task: Task
    prefix_tape: bool = False  # encoder: tape before the input, so the readout positions never move with n

    @property
    def blank(self) -> int:  # encoder tape token / decoder separator
        return max(self.task.input_size, self.task.output_size)

    @property
    def vocab_size(self) -> int:
        return self.blank + 1

    def seq_len(self, n: int) -> int:
        return n + self.task.output_length(n)  # encoder: input + tape; decoder: input + separator + answer - 1

    def batch(self, n: int, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model inputs (B, T), targets (B, T) and loss mask (B, T)."""
        s = self.task.sample(n, batch, rng)
        n_in, m = s.inputs.shape[1], s.targets.shape[1]
        if self.protocol == "encoder":
            tape, zeros = np.full((batch, m), self.blank), np.zeros_like(s.inputs)
            parts = [(tape, s.targets, s.mask), (s.inputs, zeros, zeros.astype(bool))]
            if not self.prefix_tape:
                parts = parts[::-1]
            x, y, mask = (np.concatenate([p[i] for p in parts], axis=1) for i in range(3))
        else:
            seq = np.concatenate([s.inputs, np.full((batch, 1), self.blank), s.targets], axis=1)
            x, y = seq[:, :-1], seq[:, 1:]
            mask = np.concatenate([np.zeros((batch, n_in), dtype=bool), s.mask], axis=1)
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask)


def _rng(gen: torch.Generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))


def _model_config(cfg: AlgorithmicConfig, layout: Layout, max_len: int) -> ModelConfig:
    return replace(cfg.model, mode="encoder" if layout.protocol == "encoder" else "decoder",
                   vocab_size=layout.vocab_size, max_len=max_len)


def _pe_config(pe: str, randomized: bool, max_len: int) -> dict[str, Any]:
    """The cell's encoding: `pe`, wrapped by `randomized` (positions from [0, max_len)) when asked."""
    if randomized:
        return {"name": "randomized", "base": pe, "max_len": max_len}
    return {"name": pe, "max_len": max_len} if pe == "learned" else {"name": pe}


def _test_lengths(lo: int, hi: int, count: int) -> list[int]:
    return sorted({int(round(x)) for x in np.linspace(lo, hi, count)})


def sample_scores(model: torch.nn.Module, layout: Layout, n: int, samples: int, seed: int) -> np.ndarray:
    """Per test sample: encoder, the fraction of tape positions right; decoder, 1 for an exact match. The test
    samples depend on (seed, n) only, so every model of a grid is scored on the same ones (paired)."""
    x, y, mask = layout.batch(n, samples, np.random.default_rng(10_000 + seed * 7919 + n))
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], 64):
            pred = model(x[i:i + 64].to(device))[..., :layout.task.output_size].argmax(-1).cpu()
            right, m = pred == y[i:i + 64], mask[i:i + 64]
            if layout.protocol == "decoder":
                out.append((right | ~m).all(dim=1).double())
            else:
                out.append((right & m).sum(1).double() / m.sum(1).clamp(min=1).double())
    return torch.cat(out).numpy()


def _score(model: torch.nn.Module, layout: Layout, n: int, samples: int, seed: int) -> float:
    """Encoder: per-token accuracy on the tape; decoder: exact-match accuracy (attnlab.evaluate)."""
    x, y, mask = layout.batch(n, samples, np.random.default_rng(10_000 + seed * 7919 + n))
    return masked_accuracy(model, x, y, mask, layout.task.output_size, exact=layout.protocol == "decoder")


def run_cell(cfg_dict: dict[str, Any], protocol: str, task_name: str, pe: str, randomized: bool, seed: int,
             lr: float, attention: dict[str, Any] | None = None, threads: int = 0) -> list[dict[str, Any]]:
    """Train (or load) one model of the grid and score it at every test length; cached as JSON."""
    if threads:
        torch.set_num_threads(threads)
    cfg = validate(AlgorithmicConfig, cfg_dict)
    task = get_task(task_name)
    layout = Layout(protocol, task)
    enc = protocol == "encoder"
    n_train, n_test = ((cfg.train_max_length, cfg.test_max_length) if enc
                       else (cfg.decoder_train_max_length, cfg.decoder_test_max_length))
    max_len = layout.seq_len(n_test) + 1
    mcfg, pcfg = _model_config(cfg, layout, max_len), _pe_config(pe, randomized, max_len)
    if attention is not None:  # the attention comparison: the same encoder with another attention
        mcfg = replace(mcfg, attention=attention)
    tcfg = replace(cfg.train, seed=seed, lr=lr)
    if not enc and cfg.decoder_steps:
        tcfg = replace(tcfg, steps=cfg.decoder_steps)
    lengths = list(range(task.min_length, n_train + 1)) + _test_lengths(n_train + 1, n_test, cfg.test_lengths)
    extra = {"task": task_name, "protocol": protocol, "n_train": n_train, "lengths": lengths,
             "eval_samples": cfg.eval_samples, "rows": 2}
    if attention is not None:  # its rows are labelled apart, even where the same model is also a grid cell
        extra["experiment"] = "attention"
    key = cache_key(tcfg, mcfg, pcfg, extra)
    done = cache_root() / "cells" / f"{key}.json"
    if done.exists():
        return read_json(done)
    label = f"{pe}+randomized" if randomized else pe

    def batch_fn(step: int, gen: torch.Generator):  # noqa: ANN202
        rng = _rng(gen)
        n = int(rng.integers(task.min_length, n_train + 1))  # one length per batch, uniform in 1..N
        return layout.batch(n, tcfg.batch_size, rng)

    torch.manual_seed(seed)
    model = build_model(mcfg, pcfg)
    base = {"protocol": protocol, "task": task_name, "level": task.level, "pe": label, "base_pe": pe,
            "randomized": randomized, "seed": seed, "lr": lr, "train_max_length": n_train,
            "experiment": "grid" if attention is None else "attention",
            "attention": attention_label(cfg, attention if attention is not None else mcfg.attention)}
    try:
        model, tr = train_or_load(model, batch_fn, tcfg, mcfg, pcfg, {"task": task_name, "protocol": protocol,
                                                                        "n_train": n_train}, progress=False)
    except TrainingDiverged as e:
        rows = [{**base, "length": None, "accuracy": None, "status": "failed", "error": str(e)}]
        atomic_write_json(done, rows)
        return rows
    torch.manual_seed(seed + 1)
    rows = [{**base, "length": n, "in_distribution": n <= n_train, "status": "ok",
             "accuracy": _score(model, layout, n, cfg.eval_samples, seed), "train_wall_s": tr.wall_s}
            for n in lengths]
    atomic_write_json(done, rows)
    return rows


def cells(cfg: AlgorithmicConfig) -> list[tuple[str, str, str, bool, int, float, dict[str, Any] | None]]:
    """Every (protocol, task, pe, randomized, seed, learning rate, attention) of the grid (attention None:
    model.attention), then the attention comparison's encoders."""
    lrs = cfg.learning_rates or (cfg.train.lr,)
    out: list[tuple[str, str, str, bool, int, float, dict[str, Any] | None]] = [
        ("encoder", t, pe, r, s, lr, None) for t in cfg.encoder_tasks for pe in cfg.encoder_pes
        for r in cfg.randomized for s in cfg.seeds for lr in lrs]
    out += [("decoder", t, pe, False, s, lr, None) for t in cfg.decoder_tasks for pe in cfg.decoder_pes
            for s in cfg.seeds for lr in lrs]
    out += [("encoder", t, cfg.attention_pe, False, s, lr, v.model_dump()) for v in cfg.attention_variants
            for t in cfg.attention_tasks for s in cfg.seeds for lr in lrs]
    return out


def run(cfg: AlgorithmicConfig, progress: bool = True) -> pd.DataFrame:
    """The whole grid (cached cells are read back), in parallel processes when cfg.jobs > 1."""
    from tqdm.auto import tqdm

    grid = cells(cfg)
    d = to_dict(cfg)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(grid), desc="grid", disable=not progress)
    if cfg.jobs == 1:
        for c in grid:
            rows += run_cell(d, *c)
            bar.update()
    else:
        with cf.ProcessPoolExecutor(cfg.jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(run_cell, d, *c, threads=1) for c in grid]
            for f in cf.as_completed(futs):
                rows += f.result()
                bar.update()
    bar.close()
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- summaries


PAPER_MRR = {"none": 0.69, "t5": 0.55, "alibi": 0.50, "rope": 0.33, "sinusoidal": 0.22}
FIT = 0.9  # in-distribution accuracy a model needs before its out-of-distribution accuracy says anything


def grid(results: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The task x PE grid's trained rows of one protocol (not the attention comparison's)."""
    return _ok(results, protocol)


def _ok(results: pd.DataFrame, protocol: str) -> pd.DataFrame:
    if results.empty or "protocol" not in results:
        return results.iloc[0:0]
    grid = results["experiment"].fillna("grid") == "grid" if "experiment" in results else True
    return results[(results["protocol"] == protocol) & (results["status"] == "ok") & grid]


def _best_lr(r: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows of the learning rate with the best in-distribution accuracy per (keys, seed): chosen without
    looking at the test lengths."""
    ind = r[r["in_distribution"].astype(bool)].groupby(keys + ["seed", "lr"])["accuracy"].mean()
    if ind.empty:
        return r.iloc[0:0]
    best = ind.groupby(keys + ["seed"]).idxmax().map(lambda t: t[-1]).rename("best_lr").reset_index()
    return r.merge(best, on=keys + ["seed"]).query("lr == best_lr")


def fit_table(results: pd.DataFrame, protocol: str, keys: list[str]) -> pd.Series:
    """In-distribution accuracy per keys, the worst seed's (best learning rate)."""
    r = _best_lr(_ok(results, protocol), keys)
    r = r[r["in_distribution"].astype(bool)]
    return r.groupby(keys + ["seed"])["accuracy"].mean().groupby(keys).min() if len(r) else pd.Series(dtype=float)


def ood_matrix(results: pd.DataFrame, protocol: str, keys: list[str]) -> pd.DataFrame:
    """Mean accuracy over the test lengths never seen in training per (keys, seed) (best learning rate)."""
    r = _best_lr(_ok(results, protocol), keys)
    r = r[~r["in_distribution"].astype(bool)]
    return r.groupby(keys + ["seed"])["accuracy"].mean().reset_index()


def ood_scores(results: pd.DataFrame, protocol: str = "encoder") -> pd.DataFrame:
    """Mean out-of-distribution accuracy per task and PE, averaged over seeds."""
    m = ood_matrix(results, protocol, ["task", "pe"])
    return m.groupby(["task", "pe"], sort=False)["accuracy"].mean().unstack("pe") if len(m) else pd.DataFrame()


def randomization_gain(results: pd.DataFrame) -> pd.DataFrame:
    """OOD accuracy with minus without randomized positions, per task, base PE and seed (points)."""
    m = ood_matrix(results, "encoder", ["task", "base_pe", "randomized"])
    if m.empty or m["randomized"].nunique() < 2:
        return pd.DataFrame()
    w = m.pivot_table(index=["task", "base_pe", "seed"], columns="randomized", values="accuracy")
    return (100 * (w[True] - w[False])).rename("gain").reset_index().dropna()


def attention_table(results: pd.DataFrame) -> pd.DataFrame:
    """The attention comparison: in-distribution and out-of-distribution accuracy per task and attention
    (mean over seeds; best learning rate chosen in distribution). Borji (2023) reports no number this
    scale can test, so this is measured, without a claim."""
    if results.empty or "experiment" not in results:
        return pd.DataFrame()
    r = results[(results["experiment"] == "attention") & (results["status"] == "ok")]
    if r.empty:
        return pd.DataFrame()
    r = _best_lr(r, ["task", "attention"])
    r = r.assign(split=np.where(r["in_distribution"].astype(bool), "in distribution", "longer (OOD)"))
    t = r.groupby(["task", "attention", "split", "seed"])["accuracy"].mean().groupby(["task", "attention", "split"])
    return t.mean().unstack("split").reset_index()


def reciprocal_ranks(scores: np.ndarray) -> np.ndarray:
    """1 / rank of each PE (last axis) per query, rank 1 = highest score, ties broken by PE order (pandas'
    method='first', as Kazemnejad et al.'s compute_mean_reciprocal_rank)."""
    order = np.argsort(-scores, axis=-1, kind="stable")  # (Q, P) PEs best first
    ranks = np.argsort(order, axis=-1, kind="stable") + 1  # (Q, P) rank of each PE
    return 1.0 / ranks


def mrr_matrix(results: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    """Decoder OOD accuracy (seeds, tasks, PEs): one query per (task, seed), scored by its mean accuracy over
    the test lengths (Kazemnejad et al.'s protocol)."""
    m = ood_matrix(results, "decoder", ["task", "pe"])
    if m.empty:
        return np.empty((0, 0, 0)), [], []
    w = m.pivot_table(index=["seed", "task"], columns="pe", values="accuracy", sort=False).dropna()
    pes = list(dict.fromkeys(m["pe"]))
    w = w[pes]
    seeds = w.index.get_level_values(0).nunique()
    tasks = list(dict.fromkeys(w.index.get_level_values(1)))
    return w.to_numpy().reshape(seeds, -1, len(pes)), tasks, pes


def mrr(results: pd.DataFrame) -> pd.Series:
    """Mean reciprocal rank of each decoder PE over (task, seed) queries."""
    d, _, pes = mrr_matrix(results)
    if d.size == 0:
        return pd.Series(dtype=float)
    rr = reciprocal_ranks(d.reshape(-1, len(pes)))
    return pd.Series(rr.mean(0), index=pes).sort_values(ascending=False)


@claim("randomized_positions_raise_ood_accuracy", notebook=NAME, paper="Ruoss et al. 2023, Table 1",
       min_profile="cpu", statement="randomized positional encodings raise mean out-of-distribution accuracy",
       paper_value="+12.0 points on average over 15 tasks (train 1..40, test 41..500)",
       threshold="95% interval (seeds x task-PE pairs) of the mean gain wholly >= +3.0 points")
def _randomized(df: pd.DataFrame) -> Measured:
    g = randomization_gain(df)
    if g.empty:
        return Measured.missing("no randomized / plain pairs")
    w = g.pivot_table(index="seed", columns=["task", "base_pe"], values="gain").dropna(axis=1)
    est = crossed_bootstrap(w.to_numpy()[:, :, None], lambda a: float(np.mean(a)))
    return Measured(f"mean gain {est.text('+.1f')} points ({est.n_seeds} seeds x {est.n_units} task x PE pairs)",
                    (Condition("mean gain (points)", est, ">=", 3.0),))


@claim("nope_ranks_first", notebook=NAME, paper="Kazemnejad et al. 2023, Fig. 3", min_profile="cpu",
       statement="in decoder-only models, no positional encoding generalizes best (highest MRR)",
       paper_value="MRR NoPE 0.69, T5 0.55, ALiBi 0.50, rotary 0.33, absolute (sinusoidal) 0.22",
       threshold=f"precondition: every (task, PE) >= {FIT} exact match in distribution (worst seed); "
       "95% interval (seeds x tasks) of NoPE's MRR - the best other PE's MRR wholly > 0")
def _nope(df: pd.DataFrame) -> Measured:
    fit = fit_table(df, "decoder", ["task", "pe"])
    d, tasks, pes = mrr_matrix(df)
    if d.size == 0 or "none" not in pes:
        return Measured.missing("no decoder results with NoPE")
    if len(fit) and (fit < FIT).any():
        bad = fit[fit < FIT]
        return Measured.missing(f"{len(bad)} of {len(fit)} (task, PE) do not fit in distribution, e.g. "
                                + ", ".join(f"{t}/{p} {v:.2f}" for (t, p), v in bad.head(4).items()))
    i = pes.index("none")

    def gap(a: np.ndarray) -> float:
        rr = reciprocal_ranks(a.reshape(-1, a.shape[-1])).mean(0)
        return float(rr[i] - np.delete(rr, i).max())

    est = crossed_bootstrap(d, gap)
    text = ", ".join(f"{k} {v:.2f}" for k, v in mrr(df).items())
    return Measured(f"MRR {text}; NoPE - best other {est.text('+.2f')} ({est.n_seeds} seeds x {len(tasks)} tasks)",
                    (Condition("NoPE MRR - best other", est, ">", 0.0),))


@claim("parity_not_solved", notebook=NAME, paper="Deletang et al. 2023, Table 2", min_profile="cpu",
       statement="no Transformer (any PE, randomized or not) solves parity beyond the training lengths",
       paper_value="Transformer parity_check ~50-52% (chance) for every PE",
       threshold=f"precondition: a parity_check model says something only if it fits the training lengths "
       f"(>= {FIT} in distribution, worst seed); 95% interval of the best such model's OOD accuracy wholly < 0.9")
def _parity(df: pd.DataFrame) -> Measured:
    fit = fit_table(df, "encoder", ["task", "pe"])
    if "parity_check" not in set(fit.index.get_level_values(0)):
        return Measured.missing("parity_check not in this run")
    f = fit.loc["parity_check"]
    fitted = list(f[f >= FIT].index)
    if not fitted:
        return Measured.missing(f"no parity_check model fits in distribution (best worst-seed accuracy "
                                f"{f.max():.2f}, needs >= {FIT}): beyond-length failure says nothing")
    m = ood_matrix(df, "encoder", ["task", "pe"])
    w = m[m["task"] == "parity_check"].pivot_table(index="seed", columns="pe", values="accuracy")[fitted].dropna()
    est = crossed_bootstrap(w.to_numpy()[:, None, :], lambda a: float(np.mean(a, axis=(0, 1)).max()))
    return Measured(f"best OOD accuracy {est.text()} among {', '.join(fitted)} ({est.n_seeds} seeds)",
                    (Condition("best OOD accuracy", est, "<", 0.9),))


__all__ = ["AlgorithmicConfig", "run", "run_cell", "cells", "ood_scores", "randomization_gain", "mrr", "Layout",
           "attention_table", "grid"]


def dry_run_plan(cfg: AlgorithmicConfig, profile: str = "gpu") -> list[Planned]:
    """One model per (protocol, encoding, randomized) at the largest vocabulary and the longest training and
    test sequences over the tasks (the shapes differ by task only in size): for `bench.dryrun`."""
    out = []
    grids = [("encoder", cfg.encoder_tasks, cfg.encoder_pes, cfg.randomized, cfg.train_max_length, cfg.test_max_length),
             ("decoder", cfg.decoder_tasks, cfg.decoder_pes, (False,), cfg.decoder_train_max_length,
              cfg.decoder_test_max_length)]
    for protocol, tasks, pes, rand, n_train, n_test in grids:
        if not tasks:
            continue
        layouts = [Layout(protocol, get_task(name)) for name in tasks]
        big = max(layouts, key=lambda la: (la.seq_len(n_test), la.vocab_size))
        max_len = max(la.seq_len(n_test) for la in layouts) + 1
        mcfg = replace(_model_config(cfg, big, max_len), vocab_size=max(la.vocab_size for la in layouts))
        for pe in pes:
            for r in rand:
                out.append(Planned(f"{protocol} {pe}{'+randomized' if r else ''}", mcfg, _pe_config(pe, r, max_len),
                                   cfg.train.batch_size, max(la.seq_len(n_train) for la in layouts), 64, max_len - 1))
    if cfg.attention_tasks and cfg.attention_variants:
        layouts = [Layout("encoder", get_task(name)) for name in cfg.attention_tasks]
        max_len = max(la.seq_len(cfg.test_max_length) for la in layouts) + 1
        mcfg = replace(_model_config(cfg, layouts[0], max_len), vocab_size=max(la.vocab_size for la in layouts))
        for v in cfg.attention_variants:
            out.append(Planned(f"encoder {attention_label(cfg, v)}", replace(mcfg, attention=v),
                               _pe_config(cfg.attention_pe, False, max_len), cfg.train.batch_size,
                               max(la.seq_len(cfg.train_max_length) for la in layouts), 64, max_len - 1))
    return out
