"""Decoder-only tasks after Kazemnejad et al. 2023 (NoPE): copy, reverse, addition, sorting,
summation mod 10, parity. Read as a prompt, a separator, and the answer (scored exactly)."""

from __future__ import annotations

import numpy as np

from .base import Task, task


@task("copy", "decoder")
class Copy(Task):
    """Digits; output the same digits."""

    input_size, output_size = 10, 10

    def output_length(self, n: int) -> int:
        return n

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 10, n).tolist()
        return s, s, n


@task("reverse", "decoder")
class Reverse(Copy):
    """Digits; output them reversed."""

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 10, n).tolist()
        return s, s[::-1], n


@task("sorting", "decoder")
class Sorting(Copy):
    """Digits; output them sorted."""

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 10, n).tolist()
        return s, sorted(s), n


@task("addition", "decoder")
class Addition(Task):
    """Two numbers of n // 2 and n - 1 - n // 2 digits (big-endian) around '+' (10); their sum, zero-filled."""

    input_size, output_size = 11, 10
    min_length = 3

    def output_length(self, n: int) -> int:
        return n - n // 2  # digits of the longer operand + 1 carry

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        la, lb = n // 2, n - 1 - n // 2
        a, b = rng.integers(0, 10, la).tolist(), rng.integers(0, 10, lb).tolist()
        va, vb = int("".join(map(str, a))), int("".join(map(str, b)))
        m = self.output_length(n)
        return a + [10] + b, [int(c) for c in str(va + vb).zfill(m)], m


@task("summation", "decoder")
class Summation(Task):
    """Digits; their sum mod 10."""

    input_size, output_size = 10, 10

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 10, n).tolist()
        return s, [sum(s) % 10], 1


@task("parity", "decoder")
class Parity(Task):
    """Bits; 1 iff the number of 1s is odd."""

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 2, n).tolist()
        return s, [sum(s) % 2], 1
