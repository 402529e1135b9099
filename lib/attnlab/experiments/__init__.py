"""One module per notebook: its config class, its measurements and its claims."""

from . import algorithmic, attention_speed, listops_accuracy, lm_extrapolation, pe_tour  # noqa: F401
