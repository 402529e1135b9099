"""Notebook 06: what a model without positional encoding knows about position.

Three models, at initialization and after training: a causal LM without PE (NoPE), a
bidirectional encoder without PE (trained as a masked LM), and a causal LM with RoPE. The
causal LMs are the ones of notebook 02 at the same profile (read from the model cache when
notebook 02 has run). Measurements live in attnlab.analysis.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import Tensor

from .. import analysis as A
from ..bench.dryrun import Planned
from ..claims import Condition, Measured, claim, select
from ..config import Config, replace
from ..data import load_corpus, random_batch
from ..memo import memoized
from ..model import build_model
from ..stats import crossed_bootstrap
from ..train import train_or_load
from . import lm_extrapolation as lm

NAME = "06_implicit_position"
MASK = 256  # the [MASK] byte of the masked-LM encoder (vocabulary 257)


class ImplicitPositionConfig(Config):
    """Probe sizes; the models and their training come from notebook 02 at the same profile."""

    probe_sequences: int = Field(64, ge=4, description="test-split windows probed (half fit the probe, half score it)")
    probe_length: int = Field(0, ge=0, description="0: notebook 02's training length L")
    max_distance: int = Field(64, ge=1)
    mask_rate: float = Field(0.15, gt=0, le=0.9, description="masked-LM rate for the encoder")
    ridge: float = Field(1e-3, gt=0)
    seed: int = Field(0, ge=0)


def models(cfg: ImplicitPositionConfig, profile: str, seed: int, progress: bool = True
           ) -> dict[tuple[str, str], torch.nn.Module]:
    """{(model, state): module} for causal NoPE, encoder NoPE and causal RoPE, at init and trained (one seed)."""
    c02 = lm.load_config(profile)
    corpus = load_corpus(c02.data)
    tcfg = replace(c02.train, seed=seed)
    out: dict[tuple[str, str], torch.nn.Module] = {}
    for label, pe in (("causal NoPE", "none"), ("causal RoPE", "rope")):
        torch.manual_seed(seed)
        out[(label, "init")] = build_model(c02.model, lm.pe_config(c02, pe)).eval()
        out[(label, "trained")] = lm.train_one(c02, corpus, pe, progress, seed)[0]
    enc_cfg = replace(c02.model, mode="encoder", vocab_size=257)
    pe = lm.pe_config(c02, "none")
    torch.manual_seed(seed)
    out[("encoder NoPE", "init")] = build_model(enc_cfg, pe).eval()
    torch.manual_seed(seed)
    model = build_model(enc_cfg, pe)

    def mlm(step: int, gen: torch.Generator):  # noqa: ANN202
        x, _ = random_batch(corpus.train, tcfg.batch_size, tcfg.seq_len, gen)
        mask = torch.rand(x.shape, generator=gen) < cfg.mask_rate
        return x.masked_fill(mask, MASK), x, mask

    out[("encoder NoPE", "trained")] = train_or_load(model, mlm, tcfg, enc_cfg, pe, c02.data,
                                                     {"objective": "masked-lm", "rate": cfg.mask_rate},
                                                     progress=progress, desc=f"encoder NoPE (MLM) seed {seed}")[0]
    return out


def shuffled(x: Tensor, seed: int) -> Tensor:
    """Each window's bytes in a random order: the control that keeps the bytes and removes any relation
    between content and distance (nearby bytes of real text are alike)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([row[torch.randperm(row.numel(), generator=g)] for row in x])


@memoized
def run(cfg: ImplicitPositionConfig, profile: str, progress: bool = True) -> pd.DataFrame:
    """Per seed of notebook 02: probe R^2 per layer, attention-output variance by position, cosine similarity
    by distance on real and on shuffled windows (the same windows for every model)."""
    c02 = lm.load_config(profile)
    corpus = load_corpus(c02.data)
    t = cfg.probe_length or c02.train.seq_len
    x, _ = random_batch(corpus.test, cfg.probe_sequences, t, torch.Generator().manual_seed(cfg.seed))
    xs = shuffled(x, cfg.seed)
    rows = []
    for seed in c02.seeds:
        for (label, state), model in models(cfg, profile, seed, progress).items():
            key = {"model": label, "state": state, "seed": seed}
            hs = A.hidden_states(model, x)
            for layer, r2 in enumerate(A.position_probe_r2(hs, ridge=cfg.ridge)):
                rows.append({"experiment": "probe", **key, "layer": layer, "x": layer, "value": r2})
            var = A.attention_output_variance(model, x)
            for layer in range(var.shape[0]):
                rows += [{"experiment": "variance", **key, "layer": layer + 1, "x": p, "value": float(v)}
                         for p, v in enumerate(var[layer])]
            for inputs, data in (("text", hs[-1]), ("shuffled", A.hidden_states(model, xs)[-1])):
                cos = A.cosine_by_distance(data, cfg.max_distance)
                rows += [{"experiment": "cosine", **key, "inputs": inputs, "layer": len(hs) - 1, "x": k,
                          "value": float(v)} for k, v in enumerate(cos)]
    return pd.DataFrame(rows)


@memoized
def run_decomposition(cfg: ImplicitPositionConfig, profile: str, progress: bool = True) -> pd.DataFrame:
    """Song & Zhong (2023)'s position/context decomposition of every layer of every notebook-02 model (each
    encoding, NoPE included, and seed) on the same test windows (contexts x positions). A measurement: no
    claim (the paper's figures are of large pretrained models)."""
    c02 = lm.load_config(profile)
    corpus = load_corpus(c02.data)
    t = cfg.probe_length or c02.train.seq_len
    x, _ = random_batch(corpus.test, cfg.probe_sequences, t, torch.Generator().manual_seed(cfg.seed))
    rows = []
    for spec in c02.encodings:
        for seed in c02.seeds:
            model = lm.train_one(c02, corpus, spec, progress, seed)[0]
            for layer, h in enumerate(A.hidden_states(model, x)):
                rows.append({"experiment": "decomposition", "encoding": lm.label(c02, spec), "seed": seed,
                             "layer": layer, **A.position_context_decomposition(h)})
    return pd.DataFrame(rows)


def _per_seed(df: pd.DataFrame, fn, **where: object) -> np.ndarray:  # noqa: ANN001
    """fn(rows of one seed) for each seed, as (seeds, 1) for the bootstrap."""
    r = select(df, **where)
    if r.empty or "seed" not in r:
        return np.empty((0, 1))
    return np.array([[fn(g)] for _, g in r.groupby("seed")], dtype=float)


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a))


@claim("probe_causal_vs_bidirectional_nope", notebook=NAME, paper="Kazemnejad et al. 2023, sec. 5; Haviv et al. 2022",
       min_profile="cpu", statement="absolute position is linearly recoverable from a causal NoPE model, "
       "not from a bidirectional NoPE encoder", paper_value="causal NoPE hidden states encode position; "
       "a bidirectional encoder without PE is permutation-equivariant",
       threshold="95% intervals over seeds: trained causal NoPE best-layer probe R^2 wholly >= 0.5, "
       "encoder NoPE best-layer R^2 wholly <= 0.2")
def _probe(df: pd.DataFrame) -> Measured:
    best = lambda g: float(g["value"].max())  # noqa: E731
    c = _per_seed(df, best, experiment="probe", model="causal NoPE", state="trained")
    e = _per_seed(df, best, experiment="probe", model="encoder NoPE", state="trained")
    if c.size == 0 or e.size == 0:
        return Measured.missing("no probe data")
    ce, ee = crossed_bootstrap(c[:, :, None], _mean), crossed_bootstrap(e[:, :, None], _mean)
    return Measured(f"best R^2: causal NoPE {ce.text('.2f')}, encoder NoPE {ee.text('.2f')} ({ce.n_seeds} seeds)",
                    (Condition("causal NoPE R^2", ce, ">=", 0.5), Condition("encoder NoPE R^2", ee, "<=", 0.2)))


@claim("variance_shrinks_with_position", notebook=NAME, paper="Chi et al. 2023 (self-attention variance), sec. 3",
       statement="in a causal NoPE model, the variance of attention outputs shrinks with position",
       paper_value="variance ~ 1/position at initialization (averaging over more values)",
       threshold="initial causal NoPE, first layer, 95% interval over seeds: mean variance over the last quarter "
       "of positions / mean over the first eighth wholly < 0.5")
def _variance(df: pd.DataFrame) -> Measured:
    def ratio(g: pd.DataFrame) -> float:
        a = g.sort_values("x")["value"].to_numpy()
        return float(a[3 * len(a) // 4:].mean() / a[: max(1, len(a) // 8)].mean()) if len(a) >= 8 else float("nan")

    r = _per_seed(df, ratio, experiment="variance", model="causal NoPE", state="init", layer=1)
    if r.size == 0 or not np.isfinite(r).all():
        return Measured.missing("no variance data (needs 8 positions)")
    est = crossed_bootstrap(r[:, :, None], _mean)
    return Measured(f"ratio {est.text()} ({est.n_seeds} seeds)", (Condition("late / early variance", est, "<", 0.5),))


def cosine_gap(g: pd.DataFrame) -> float:
    """cos(distance 1) - mean cos(distance >= max/2) of one seed's curve."""
    c = g.set_index("x")["value"]
    return float(c.loc[1] - c[c.index >= c.index.max() / 2].mean()) if len(c) >= 3 else float("nan")


@claim("nearby_states_more_similar", notebook=NAME, paper="Zuo et al. 2024", min_profile="cpu",
       statement="after training, nearby hidden states of a causal NoPE model are more similar than distant ones, "
       "through position and not through content",
       paper_value="position information emerges through the similarity of nearby embeddings",
       threshold="last layer, shuffled windows (no content-distance relation), 95% intervals over seeds: trained "
       "causal NoPE gap cos(1) - cos(far) wholly >= 0.05 and wholly >= 0.05 above the bidirectional NoPE "
       "encoder's (the control without position)")
def _cosine(df: pd.DataFrame) -> Measured:
    c = _per_seed(df, cosine_gap, experiment="cosine", model="causal NoPE", state="trained", inputs="shuffled")
    e = _per_seed(df, cosine_gap, experiment="cosine", model="encoder NoPE", state="trained", inputs="shuffled")
    if c.size == 0 or e.size == 0 or len(c) != len(e):
        return Measured.missing("no shuffled-window similarity data for causal and encoder NoPE")
    gap = crossed_bootstrap(c[:, :, None], _mean)
    diff = crossed_bootstrap(np.concatenate([e[:, :, None], c[:, :, None]], axis=2),
                             lambda a: float(np.mean(a[..., 1]) - np.mean(a[..., 0])))
    return Measured(f"shuffled windows: causal NoPE gap {gap.text('+.3f')}, minus encoder's {diff.text('+.3f')} "
                    f"({gap.n_seeds} seeds)",
                    (Condition("causal NoPE gap", gap, ">=", 0.05), Condition("gap - encoder gap", diff, ">=", 0.05)))


def dry_run_plan(cfg: ImplicitPositionConfig, profile: str) -> list[Planned]:
    """The bidirectional NoPE encoder this notebook trains (notebook 02's models are in 02's plan)."""
    c02 = lm.load_config(profile)
    enc = replace(c02.model, mode="encoder", vocab_size=257)
    t = cfg.probe_length or c02.train.seq_len
    return [Planned("encoder NoPE (masked LM)", enc, lm.pe_config(c02, "none"), c02.train.batch_size,
                    c02.train.seq_len, cfg.probe_sequences, t)]
