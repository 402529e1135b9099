"""The positional-encoding zoo: one file per encoding, registered in ENCODINGS.

Every module of this folder is imported here, so a new file with one ``@ENCODINGS.register`` class is
all a new encoding needs (the registry is filled top-down, from this package's ``__init__``).
"""

from ..registry import import_submodules
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
    score_mod_of,
)
from .rope import rope_inv_freq
from .sinusoidal import sinusoidal_table
from .t5 import t5_relative_bucket

import_submodules(__name__, __path__)

__all__ = [
    "ENCODINGS", "PESpec", "PEDims", "Rotation", "PositionalEncoding", "AdditivePE", "BiasPE", "RotaryPE",
    "ScoreMod", "build_encoding", "alibi_slopes", "ALiBi", "t5_relative_bucket", "apply_rotation",
    "rope_inv_freq", "log_length_scale", "sinusoidal_table", "score_mod_of", "relative_fn", "position_fn",
]
