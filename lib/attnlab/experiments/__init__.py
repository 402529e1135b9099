"""One module per notebook (its config, measurements and claims); the notebook registry, filled here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import config as C
from ..bench.dryrun import Planned
from ..errors import ConfigError
from ..registry import Registry
from . import (
    algorithmic,
    attention_speed,
    extension,
    implicit_position,
    listops_accuracy,
    lm_extrapolation,
    long_context,
    pe_tour,
)

NOTEBOOKS: Registry[type[C.Config]] = Registry("notebook")
NOTEBOOKS.register(pe_tour.NAME)(pe_tour.PETourConfig)
NOTEBOOKS.register(lm_extrapolation.NAME)(lm_extrapolation.LMExtrapolationConfig)
NOTEBOOKS.register(algorithmic.NAME)(algorithmic.AlgorithmicConfig)
NOTEBOOKS.register(attention_speed.NAME)(attention_speed.AttentionSpeedConfig)
NOTEBOOKS.register(listops_accuracy.NAME)(listops_accuracy.ListOpsConfig)
NOTEBOOKS.register(implicit_position.NAME)(implicit_position.ImplicitPositionConfig)
NOTEBOOKS.register(extension.NAME)(extension.ExtensionConfig)
NOTEBOOKS.register(long_context.NAME)(long_context.LongContextConfig)


# the notebooks that train models, each module with its `dry_run_plan(cfg, profile)`
TRAINING = {m.NAME: m for m in (lm_extrapolation, algorithmic, listops_accuracy, implicit_position, extension,
                                long_context)}


# notebooks that read another notebook's trained models (notebook 02's): a cluster run starts them after it
NEEDS: dict[str, tuple[str, ...]] = {n: (lm_extrapolation.NAME,) for n in
                                     (implicit_position.NAME, extension.NAME, long_context.NAME)}


def preflight(name: str, cfg: C.Config, profile: str) -> None:
    """Checks of a notebook's inputs that need more than validation (a corpus that must load and be large
    enough): ConfigError before any kernel starts. Notebooks 06-08 read notebook 02's models and corpus."""
    if name == lm_extrapolation.NAME:
        lm_extrapolation.preflight(cfg)  # type: ignore[arg-type]
    elif name in (implicit_position.NAME, extension.NAME):
        lm_extrapolation.preflight(lm_extrapolation.load_config(profile))
    elif name == long_context.NAME:
        long_context.preflight(cfg)  # type: ignore[arg-type]
        lm_extrapolation.preflight(lm_extrapolation.load_config(profile))


def dry_run_plan(name: str, cfg: C.Config, profile: str) -> list[Planned]:
    """The models notebook `name` trains at `profile`, with their shapes (`bench.dryrun`); notebooks 01 and
    04 train none."""
    module = TRAINING.get(name)
    return module.dry_run_plan(cfg, profile) if module else []


def dry_run(profile: str = "gpu", names: list[str] | None = None) -> list[dict[str, Any]]:
    """Every model of every notebook (or `names`) at `profile`, built at full size and stepped once on the
    meta device (`bench.dryrun.dry_run`): a row per model with its memory estimate."""
    from ..bench.dryrun import dry_run as run_one

    rows = []
    for name in names or NOTEBOOKS.names():
        name = resolve_notebook(name)
        cfg = load(name, profile)
        rows += [{"notebook": name, **run_one(p)} for p in dry_run_plan(name, cfg, profile)]
    return rows


def resolve_notebook(name: str) -> str:
    """Full notebook name from a name or a unique prefix ('01', '01_positional')."""
    name = name.removesuffix(".ipynb").split("/")[-1]
    if name in NOTEBOOKS:
        return name
    hits = [n for n in NOTEBOOKS.names() if n.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    raise ConfigError(f"notebook = {name!r}: unknown; valid choices: {', '.join(NOTEBOOKS.names())}")


def load(name: str, profile: str = "auto", overrides: Mapping[str, Any] | None = None) -> C.Config:
    """The validated config of notebook `name` at `profile`: defaults < preset < overrides."""
    name = resolve_notebook(name)
    return C.load(NOTEBOOKS[name], name, profile, overrides)
