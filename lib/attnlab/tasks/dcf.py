"""Deterministic context-free tasks of Deletang et al. 2023: stack manipulation, reverse string,
modular arithmetic with brackets, solve equation."""

from __future__ import annotations

import numpy as np

from .base import Task, task

MODULUS = 5
SYMBOLS = {"+": MODULUS, "-": MODULUS + 1, "*": MODULUS + 2, "(": MODULUS + 3, ")": MODULUS + 4, "x": MODULUS + 5,
           "=": MODULUS + 6}


@task("stack_manipulation", "dcf")
class StackManipulation(Task):
    """Stack bottom-to-top then POP / PUSH 0 / PUSH 1 (2, 3, 4); output the final stack top-to-bottom,
    a termination token 2, then padding (n + 1 outputs; positions after the terminator do not count)."""

    input_size, output_size = 5, 3

    def output_length(self, n: int) -> int:
        return n + 1

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        if n == 1:
            v = int(rng.integers(0, 2))
            return [v], [v, 2], 2
        k = int(rng.integers(1, n))
        stack = rng.integers(0, 2, k).tolist()
        actions = rng.integers(2, 5, n - k).tolist()
        cur = list(stack)
        for a in actions:
            if a == 2:
                if cur:
                    cur.pop()
            else:
                cur.append(a - 3)
        out = cur[::-1] + [2]
        return stack + actions, out, len(out)


@task("reverse_string", "dcf")
class ReverseString(Task):
    """Binary string; output it reversed."""

    def output_length(self, n: int) -> int:
        return n

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        s = rng.integers(0, 2, n).tolist()
        return s, s[::-1], n


def bracket_expression(n: int, rng: np.random.Generator, modulus: int = MODULUS) -> tuple[str, int]:
    """A bracketed +/- expression of exactly n characters and its value mod `modulus` (Deletang et al.)."""
    if n == 1:
        d = int(rng.integers(0, modulus))
        return str(d), d
    if n == 2:
        d = int(rng.integers(0, modulus))
        return f"-{d}", -d % modulus
    if n == 3:
        d = int(rng.integers(0, modulus))
        return f"({d})", d
    if n == 4:
        d = int(rng.integers(0, modulus))
        return f"(-{d})", -d % modulus
    left = int(rng.integers(1, n - 3))
    ls, lv = bracket_expression(left, rng, modulus)
    rs, rv = bracket_expression(n - left - 3, rng, modulus)
    if rng.integers(0, 2) == 0:
        return f"({ls}+{rs})", (lv + rv) % modulus
    return f"({ls}-{rs})", (lv - rv) % modulus


def encode(expr: str) -> list[int]:
    return [int(c) if c.isdigit() else SYMBOLS[c] for c in expr]


@task("modular_arithmetic_brackets", "dcf")
class ModularArithmeticBrackets(Task):
    """A bracketed expression of residues mod 5 with + and -; its value mod 5 (e.g. ((1-2)+(-3)) = 1)."""

    input_size, output_size = MODULUS + 7, MODULUS

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        expr, val = bracket_expression(n, rng)
        return encode(expr), [val], 1


@task("solve_equation", "dcf")
class SolveEquation(Task):
    """A bracketed expression with one digit replaced by x, '=', and its value; output x (mod 5)."""

    input_size, output_size = MODULUS + 7, MODULUS
    min_length = 3

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        expr, val = bracket_expression(n - 2, rng)
        idx = int(rng.integers(0, len(expr)))
        while not expr[idx].isdigit():
            idx = (idx + 1) % len(expr)
        x = int(expr[idx])
        return encode(expr[:idx] + "x" + expr[idx + 1:] + "=" + str(val)), [x], 1
