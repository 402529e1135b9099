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

from .. import analysis as A
from ..claims import Measured, claim, select
from ..config import Config, replace
from ..data import load_corpus, random_batch
from ..model import build_model
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


def models(cfg: ImplicitPositionConfig, profile: str, progress: bool = True) -> dict[tuple[str, str], torch.nn.Module]:
    """{(model, state): module} for causal NoPE, encoder NoPE and causal RoPE, at init and trained."""
    c02 = lm.load_config(profile)
    corpus = load_corpus(c02.data)
    out: dict[tuple[str, str], torch.nn.Module] = {}
    for label, pe in (("causal NoPE", "none"), ("causal RoPE", "rope")):
        torch.manual_seed(c02.train.seed)
        out[(label, "init")] = build_model(c02.model, lm.pe_config(c02, pe)).eval()
        out[(label, "trained")] = lm.train_one(c02, corpus, pe, progress)[0]
    enc_cfg = replace(c02.model, mode="encoder", vocab_size=257)
    pe = lm.pe_config(c02, "none")
    torch.manual_seed(c02.train.seed)
    out[("encoder NoPE", "init")] = build_model(enc_cfg, pe).eval()
    torch.manual_seed(c02.train.seed)
    model = build_model(enc_cfg, pe)

    def mlm(step: int, gen: torch.Generator):  # noqa: ANN202
        x, _ = random_batch(corpus.train, c02.train.batch_size, c02.train.seq_len, gen)
        mask = torch.rand(x.shape, generator=gen) < cfg.mask_rate
        return x.masked_fill(mask, MASK), x, mask

    out[("encoder NoPE", "trained")] = train_or_load(model, mlm, c02.train, enc_cfg, pe, c02.data,
                                                     {"objective": "masked-lm", "rate": cfg.mask_rate},
                                                     progress=progress, desc="encoder NoPE (MLM)")[0]
    return out


def run(cfg: ImplicitPositionConfig, profile: str, progress: bool = True) -> pd.DataFrame:
    """Probe R^2 per layer, attention-output variance by position, cosine similarity by distance."""
    c02 = lm.load_config(profile)
    corpus = load_corpus(c02.data)
    t = cfg.probe_length or c02.train.seq_len
    x, _ = random_batch(corpus.test, cfg.probe_sequences, t, torch.Generator().manual_seed(cfg.seed))
    rows = []
    for (label, state), model in models(cfg, profile, progress).items():
        hs = A.hidden_states(model, x)
        for layer, r2 in enumerate(A.position_probe_r2(hs, ridge=cfg.ridge)):
            rows.append({"experiment": "probe", "model": label, "state": state, "layer": layer, "x": layer,
                         "value": r2})
        var = A.attention_output_variance(model, x)
        for layer in range(var.shape[0]):
            rows += [{"experiment": "variance", "model": label, "state": state, "layer": layer + 1, "x": p,
                      "value": float(v)} for p, v in enumerate(var[layer])]
        cos = A.cosine_by_distance(hs[-1], cfg.max_distance)
        rows += [{"experiment": "cosine", "model": label, "state": state, "layer": len(hs) - 1, "x": k,
                  "value": float(v)} for k, v in enumerate(cos)]
    return pd.DataFrame(rows)


def _best_r2(df: pd.DataFrame, model: str, state: str = "trained") -> float:
    r = select(df, experiment="probe", model=model, state=state)
    return float(r["value"].max()) if len(r) else float("nan")


@claim("probe_causal_vs_bidirectional_nope", notebook=NAME, paper="Kazemnejad et al. 2023, sec. 5; Haviv et al. 2022",
       min_profile="cpu", statement="absolute position is linearly recoverable from a causal NoPE model, "
       "not from a bidirectional NoPE encoder", paper_value="causal NoPE hidden states encode position; "
       "a bidirectional encoder without PE is permutation-equivariant",
       threshold="trained causal NoPE best-layer probe R^2 >= 0.5 and encoder NoPE best-layer R^2 <= 0.2")
def _probe(df: pd.DataFrame) -> Measured:
    c, e = _best_r2(df, "causal NoPE"), _best_r2(df, "encoder NoPE")
    if np.isnan(c) or np.isnan(e):
        return Measured("no data", None)
    return Measured(f"best R^2: causal NoPE {c:.2f}, encoder NoPE {e:.2f}", c >= 0.5 and e <= 0.2)


@claim("variance_shrinks_with_position", notebook=NAME, paper="Chi et al. 2023 (self-attention variance), sec. 3",
       statement="in a causal NoPE model, the variance of attention outputs shrinks with position",
       paper_value="variance ~ 1/position at initialization (averaging over more values)",
       threshold="initial causal NoPE, first layer: mean variance over the last quarter of positions "
       "< 0.5 x mean over the first eighth")
def _variance(df: pd.DataFrame) -> Measured:
    v = select(df, experiment="variance", model="causal NoPE", state="init", layer=1).sort_values("x")["value"]
    if len(v) < 8:
        return Measured("no data", None)
    a = v.to_numpy()
    r = float(a[3 * len(a) // 4:].mean() / a[: max(1, len(a) // 8)].mean())
    return Measured(f"ratio {r:.3f}", r < 0.5)


@claim("nearby_states_more_similar", notebook=NAME, paper="Zuo et al. 2024", min_profile="cpu",
       statement="after training, nearby hidden states are more similar than distant ones",
       paper_value="position information emerges through the similarity of nearby embeddings",
       threshold="trained causal NoPE, last layer: cos(distance 1) - mean cos(distance >= max/2) >= 0.05")
def _cosine(df: pd.DataFrame) -> Measured:
    c = select(df, experiment="cosine", model="causal NoPE", state="trained").set_index("x")["value"]
    if len(c) < 3:
        return Measured("no data", None)
    far = float(c[c.index >= c.index.max() / 2].mean())
    gap = float(c.loc[1] - far)
    return Measured(f"cos(1) = {c.loc[1]:.3f}, far = {far:.3f} (gap {gap:+.3f})", gap >= 0.05)
