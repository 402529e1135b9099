"""Context-sensitive tasks of Deletang et al. 2023: duplicate, missing duplicate, odds first,
binary addition and multiplication, square root, bucket sort."""

from __future__ import annotations

import math

import numpy as np

from .base import Task, task


def to_binary(x: int, width: int = 0, little_endian: bool = True) -> list[int]:
    """Binary digits of x, zero-filled to `width`, little-endian by default."""
    s = f"{x:b}".zfill(width) if x or width else ""
    bits = [int(c) for c in s]
    return bits[::-1] if little_endian else bits


def _big_int(bits: int, rng: np.random.Generator) -> int:
    """Uniform integer in [1, 2^bits - 1] for any number of bits."""
    while True:
        v = int.from_bytes(rng.bytes((bits + 7) // 8), "little") & ((1 << bits) - 1)
        if v:
            return v


@task("duplicate_string", "cs")
class DuplicateString(Task):
    """Binary string w; output ww."""

    def output_length(self, n: int) -> int:
        return 2 * n

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 2, n).tolist()
        return s, s + s, 2 * n


@task("missing_duplicate_string", "cs")
class MissingDuplicateString(Task):
    """ww with one symbol replaced by 2 (odd lengths padded with 3); output the missing symbol."""

    input_size = 4
    min_length = 2

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 2, n // 2).tolist()
        d = s + s
        i = int(rng.integers(0, len(d)))
        out = d[i]
        d[i] = 2
        return d + [3] * (n % 2), [out], 1


@task("odds_first", "cs")
class OddsFirst(Task):
    """Binary string x1 x2 x3 ...; output the odd-indexed symbols, then the even-indexed ones."""

    def output_length(self, n: int) -> int:
        return n

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 2, n).tolist()
        return s, s[0::2] + s[1::2], n


class _BinaryOp(Task):
    """Two little-endian binary numbers separated by 2; the result little-endian, a terminator 2, padding."""

    input_size, output_size = 3, 3
    min_length = 3

    def op(self, a: int, b: int) -> int:
        raise NotImplementedError

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        ln = int(rng.integers(1, n - 1))
        lm = n - 1 - ln
        a, b = _big_int(ln, rng), _big_int(lm, rng)
        out = to_binary(self.op(a, b)) + [2]
        return to_binary(a, ln) + [2] + to_binary(b, lm), out, len(out)


@task("binary_addition", "cs")
class BinaryAddition(_BinaryOp):
    """a + b in little-endian binary (e.g. 001 2 01101 -> 01011 2: 4 + 22 = 26)."""

    def output_length(self, n: int) -> int:
        return n + 1

    def op(self, a: int, b: int) -> int:
        return a + b


@task("binary_multiplication", "cs")
class BinaryMultiplication(_BinaryOp):
    """a * b in little-endian binary (e.g. 001 2 01101 -> 0001101 2: 4 * 22 = 88)."""

    def output_length(self, n: int) -> int:
        return n

    def op(self, a: int, b: int) -> int:
        return a * b


@task("compute_sqrt", "cs")
class ComputeSqrt(Task):
    """A big-endian binary number; floor of its square root in big-endian binary, ceil(n / 2) digits."""

    def output_length(self, n: int) -> int:
        return math.ceil(n / 2)

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        x = _big_int(n, rng)
        m = self.output_length(n)
        return to_binary(x, n, little_endian=False), to_binary(math.isqrt(x), m, little_endian=False), m


@task("bucket_sort", "cs")
class BucketSort(Task):
    """A string over 5 symbols; output it sorted."""

    input_size, output_size = 5, 5

    def output_length(self, n: int) -> int:
        return n

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 5, n).tolist()
        return s, sorted(s), n
