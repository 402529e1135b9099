"""FIRST of Chiang & Cholak 2022 (Overcoming a theoretical limitation of self-attention); their PARITY is
the regular task parity_check."""

from __future__ import annotations

import numpy as np

from .base import Task, task


@task("first", "formal")
class First(Task):
    """Binary string; 1 iff its first symbol is 1 (the language FIRST)."""

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 2, n).tolist()
        return s, [s[0]], 1
