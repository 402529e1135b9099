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

from ..claims import Measured, claim
from ..config import Config, one_of, replace, to_dict, validate
from ..errors import ConfigError
from ..evaluate import masked_accuracy
from ..io import atomic_write_json, read_json
from ..model import ModelConfig, build_model
from ..positional import ENCODINGS
from ..tasks.base import Task, get_task, task_names
from ..train import TrainConfig, TrainingDiverged, cache_key, cache_root, train_or_load

NAME = "03_algorithmic_length_generalization"


def _task_choices() -> list[str]:
    return task_names()


def _pe_choices() -> list[str]:
    return ENCODINGS.names()


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
    decoder_pes: tuple[one_of(_pe_choices), ...] = ("none", "t5", "alibi", "rope", "learned")
    decoder_train_max_length: int = Field(20, ge=1)
    decoder_steps: int = Field(0, ge=0, description="training steps of decoder models (0: train.steps)")
    decoder_test_max_length: int = Field(40, ge=2)
    eval_samples: int = Field(256, ge=1, description="instances per test length")
    seeds: tuple[Annotated[int, Field(ge=0)], ...] = (0,)
    learning_rates: tuple[Annotated[float, Field(gt=0)], ...] = Field((),
                                             description="empty: train.lr; several: report the best (Ruoss et al.)")
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


def _score(model: torch.nn.Module, layout: Layout, n: int, samples: int, seed: int) -> float:
    """Encoder: per-token accuracy on the tape; decoder: exact-match accuracy (attnlab.evaluate)."""
    x, y, mask = layout.batch(n, samples, np.random.default_rng(10_000 + seed * 7919 + n))
    return masked_accuracy(model, x, y, mask, layout.task.output_size, exact=layout.protocol == "decoder")


def run_cell(cfg_dict: dict[str, Any], protocol: str, task_name: str, pe: str, randomized: bool, seed: int,
             lr: float, threads: int = 0) -> list[dict[str, Any]]:
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
    tcfg = replace(cfg.train, seed=seed, lr=lr)
    if not enc and cfg.decoder_steps:
        tcfg = replace(tcfg, steps=cfg.decoder_steps)
    lengths = list(range(task.min_length, n_train + 1)) + _test_lengths(n_train + 1, n_test, cfg.test_lengths)
    key = cache_key(tcfg, mcfg, pcfg, {"task": task_name, "protocol": protocol, "n_train": n_train,
                                       "lengths": lengths, "eval_samples": cfg.eval_samples, "rows": 2})
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
            "randomized": randomized, "seed": seed, "lr": lr, "train_max_length": n_train}
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


def cells(cfg: AlgorithmicConfig) -> list[tuple[str, str, str, bool, int, float]]:
    """Every (protocol, task, pe, randomized, seed, learning rate) of the grid."""
    lrs = cfg.learning_rates or (cfg.train.lr,)
    out = [("encoder", t, pe, r, s, lr) for t in cfg.encoder_tasks for pe in cfg.encoder_pes for r in cfg.randomized
           for s in cfg.seeds for lr in lrs]
    out += [("decoder", t, pe, False, s, lr) for t in cfg.decoder_tasks for pe in cfg.decoder_pes
            for s in cfg.seeds for lr in lrs]
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


def ood_scores(results: pd.DataFrame, protocol: str = "encoder") -> pd.DataFrame:
    """Mean accuracy over the test lengths never seen in training, per task and PE (best over seeds and
    learning rates, as Ruoss et al. report)."""
    r = results[(results["protocol"] == protocol) & (results["status"] == "ok") & (~results["in_distribution"].astype(bool))]
    per_run = r.groupby(["task", "pe", "seed", "lr"], sort=False)["accuracy"].mean()
    return per_run.groupby(["task", "pe"], sort=False).max().unstack("pe")


def randomization_gain(results: pd.DataFrame) -> pd.DataFrame:
    """OOD accuracy with minus without randomized positions, per task and base PE (points)."""
    r = results[(results["protocol"] == "encoder") & (results["status"] == "ok") & (~results["in_distribution"].astype(bool))]
    s = r.groupby(["task", "base_pe", "randomized", "seed", "lr"])["accuracy"].mean().groupby(
        ["task", "base_pe", "randomized"]).max().unstack("randomized")
    if True not in s or False not in s:
        return pd.DataFrame()
    return (100 * (s[True] - s[False])).unstack("base_pe")


def mrr(results: pd.DataFrame) -> pd.Series:
    """Mean reciprocal rank of each decoder PE across (task, OOD length) cells (ties share the best rank)."""
    r = results[(results["protocol"] == "decoder") & (results["status"] == "ok") & (~results["in_distribution"].astype(bool))]
    if r.empty:
        return pd.Series(dtype=float)
    acc = r.groupby(["task", "length", "pe"])["accuracy"].max().unstack("pe")  # best over seeds and rates
    ranks = acc.rank(axis=1, ascending=False, method="min")
    return (1.0 / ranks).mean().sort_values(ascending=False)


PAPER_MRR = {"none": 0.69, "t5": 0.55, "alibi": 0.50, "rope": 0.33, "learned": 0.22}


@claim("randomized_positions_raise_ood_accuracy", notebook=NAME, paper="Ruoss et al. 2023, Table 1",
       min_profile="cpu", statement="randomized positional encodings raise mean out-of-distribution accuracy",
       paper_value="+12.0 points on average over 15 tasks (train 1..40, test 41..500)",
       threshold="mean gain over tasks and base PEs >= +3.0 points")
def _randomized(df: pd.DataFrame) -> Measured:
    g = randomization_gain(df)
    if g.empty:
        return Measured("no randomized / plain pairs", None)
    m = float(np.nanmean(g.to_numpy()))
    return Measured(f"mean gain {m:+.1f} points over {g.size} task x PE pairs", m >= 3.0)


@claim("nope_ranks_first", notebook=NAME, paper="Kazemnejad et al. 2023, Fig. 3", min_profile="cpu",
       statement="in decoder-only models, no positional encoding generalizes best (highest MRR)",
       paper_value="MRR NoPE 0.69, T5 0.55, ALiBi 0.50, rotary 0.33, absolute 0.22",
       threshold="NoPE's MRR is strictly above every other decoder PE's (all-zero accuracy: inconclusive)")
def _nope(df: pd.DataFrame) -> Measured:
    m = mrr(df)
    if m.empty or "none" not in m:
        return Measured("no decoder results with NoPE", None)
    text = ", ".join(f"{k} {v:.2f}" for k, v in m.items())
    r = df[(df["protocol"] == "decoder") & (df["status"] == "ok") & (~df["in_distribution"].astype(bool))]
    if float(r["accuracy"].max()) == 0.0:
        return Measured(text + " (every PE at 0% beyond the training lengths: no ranking)", None)
    return Measured(text, bool(m["none"] > m.drop("none").max()))


@claim("parity_not_solved", notebook=NAME, paper="Deletang et al. 2023, Table 2", min_profile="cpu",
       statement="no Transformer (any PE, randomized or not) solves parity beyond the training lengths",
       paper_value="Transformer parity_check ~50-52% (chance) for every PE",
       threshold="best OOD accuracy on parity_check < 90% (the paper's 'solved' level); conclusive only if "
       "some encoder model of the run reaches >= 90% in distribution (the setup can learn)")
def _parity(df: pd.DataFrame) -> Measured:
    s = ood_scores(df)
    if "parity_check" not in s.index:
        return Measured("parity_check not in this run", None)
    best = float(s.loc["parity_check"].max())
    text = f"best {100 * best:.1f}% ({s.loc['parity_check'].idxmax()})"
    ind = df[(df["protocol"] == "encoder") & (df["status"] == "ok") & df["in_distribution"].astype(bool)]
    learned = ind.groupby(["task", "pe", "seed", "lr"])["accuracy"].mean().max() if len(ind) else 0.0
    if learned < 0.9:
        return Measured(text + f"; no model learned any task in distribution (best {100 * learned:.0f}%)", None)
    return Measured(text, best < 0.9)


__all__ = ["AlgorithmicConfig", "run", "run_cell", "cells", "ood_scores", "randomization_gain", "mrr", "Layout"]
