"""One module per notebook: its config class, its measurements and its claims."""

from . import (  # noqa: F401
    algorithmic,
    attention_speed,
    extension,
    implicit_position,
    listops_accuracy,
    lm_extrapolation,
    pe_tour,
)
