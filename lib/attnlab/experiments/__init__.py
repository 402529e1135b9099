"""One module per notebook: its config class, its measurements and its claims."""

from . import lm_extrapolation, pe_tour  # noqa: F401
