"""One module per notebook: its config class, its measurements and its claims."""

from . import attention_speed, lm_extrapolation, pe_tour  # noqa: F401
