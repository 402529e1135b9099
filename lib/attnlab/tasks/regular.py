"""Regular tasks of Deletang et al. 2023 (Table 1): even pairs, modular arithmetic, parity, cycle navigation."""

from __future__ import annotations

import numpy as np

from .base import Task, task

MODULUS = 5
PLUS, MINUS, TIMES, BLANK = 0, 1, 2, 3  # operators follow the residues: token = MODULUS + op


@task("even_pairs", "regular")
class EvenPairs(Task):
    """Binary string; 1 iff the number of 'ab' plus 'ba' pairs is even (iff first == last)."""

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 2, n).tolist()
        pairs = sum(1 for a, b in zip(s, s[1:]) if a != b)
        return s, [int(pairs % 2 == 0)], 1


@task("parity_check", "regular")
class ParityCheck(Task):
    """Binary string; 1 iff the number of 1s is odd."""

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 2, n).tolist()
        return s, [sum(s) % 2], 1


@task("cycle_navigation", "regular")
class CycleNavigation(Task):
    """Actions stay / right / left (0, 1, 2 meaning 0, +1, -1) on a cycle of 5 from 0; the final position."""

    input_size, output_size = 3, 5

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        a = rng.integers(0, 3, n).tolist()
        return a, [sum(x - 1 for x in a) % 5], 1


def evaluate_flat(tokens: list[int], modulus: int = MODULUS) -> int:
    """Value of 'r op r op r ...' with the usual precedence (* before + and -), mod `modulus`."""
    terms: list[int] = []
    sign, cur = 1, tokens[0]
    for i in range(1, len(tokens), 2):
        op, r = tokens[i] - modulus, tokens[i + 1]
        if op == TIMES:
            cur *= r
        else:
            terms.append(sign * cur)
            sign, cur = (1 if op == PLUS else -1), r
    terms.append(sign * cur)
    return sum(terms) % modulus


@task("modular_arithmetic", "regular")
class ModularArithmetic(Task):
    """Residues mod 5 and operators +, -, * alternating (odd lengths); the value mod 5 (e.g. 1+2*3 = 2)."""

    input_size, output_size = MODULUS + 4, MODULUS

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        n = n if n % 2 == 1 else n - 1  # expressions have odd length: even n gives n - 1 (as the reference)
        s = [0] * n
        s[0::2] = rng.integers(0, MODULUS, n // 2 + 1).tolist()
        s[1::2] = (MODULUS + rng.choice([PLUS, MINUS, TIMES], n // 2)).tolist()
        return s, [evaluate_flat(s)], 1
