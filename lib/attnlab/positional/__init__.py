"""The positional-encoding zoo: one file per encoding, registered in ENCODINGS (filled here, top-down)."""

from . import alibi, fire, kerple, learned, randomized, rope, rope_scaling, shaw, sinusoidal, t5, xpos  # noqa: F401
from .alibi import ALiBi, alibi_slopes
from .base import (
    ENCODINGS,
    AdditivePE,
    BiasPE,
    PEDims,
    PESpec,
    PositionalEncoding,
    RotaryPE,
    Rotation,
    ScoreMod,
    apply_rotation,
    build_encoding,
    log_length_scale,
    position_fn,
    relative_fn,
    rotate_half,
    score_mod_of,
)
from .rope import rope_inv_freq
from .sinusoidal import sinusoidal_table
from .t5 import t5_relative_bucket

__all__ = [
    "ENCODINGS", "PESpec", "PEDims", "Rotation", "PositionalEncoding", "AdditivePE", "BiasPE", "RotaryPE",
    "ScoreMod", "build_encoding", "alibi_slopes", "ALiBi", "t5_relative_bucket", "rotate_half", "apply_rotation",
    "rope_inv_freq", "log_length_scale", "sinusoidal_table", "score_mod_of", "relative_fn", "position_fn",
]
