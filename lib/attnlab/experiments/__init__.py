"""One module per notebook (its config, measurements and claims); the notebook registry, filled here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import config as C
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
