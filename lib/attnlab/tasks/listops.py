"""LRA ListOps (Nangia & Bowman 2018; Tay et al. 2021), generated offline and deterministic by seed.

Facts of the LRA generator: operators MIN, MAX, MED (int of the median), SM (sum mod 10);
leaves 0..9; below max_depth a node is a leaf with probability 0.75; an operator gets
randint(2, max_args) children; trees are kept when min_length < length < max_length, where
length counts operator, leaf and closing-bracket tokens (parentheses are not tokens here).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VALUE_P = 0.25  # probability that a node below max_depth is an operator
PAD, CLS = 0, 1
VOCAB = ["<pad>", "<cls>", *[str(d) for d in range(10)], *OPERATORS, END]
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
DIGIT_IDS = [TOKEN_ID[str(d)] for d in range(10)]

Tree = int | tuple[str, list["Tree"]]


def generate_tree(rng: random.Random, depth: int = 1, max_depth: int = 10, max_args: int = 10) -> tuple[Tree, int]:
    """One random tree and its token length (LRA's generate_tree)."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        return rng.randrange(10), 1
    n_args = rng.randint(2, max_args)
    children, length = [], 2  # the operator token and the closing bracket
    for _ in range(n_args):
        child, n = generate_tree(rng, depth + 1, max_depth, max_args)
        children.append(child)
        length += n
    return (rng.choice(OPERATORS), children), length


def evaluate(tree: Tree) -> int:
    """The value of a tree: MIN, MAX, MED = int(median), SM = sum mod 10."""
    if isinstance(tree, int):
        return tree
    op, children = tree
    vals = [evaluate(c) for c in children]
    if op == "[MIN":
        return min(vals)
    if op == "[MAX":
        return max(vals)
    if op == "[MED":
        return int(statistics.median(vals))
    if op == "[SM":
        return sum(vals) % 10
    raise ValueError(f"unknown operator {op!r}")


def tokens(tree: Tree) -> list[str]:
    """Prefix token sequence: '[MAX 2 9 [MIN 4 7 ] 0 ]'."""
    if isinstance(tree, int):
        return [str(tree)]
    op, children = tree
    out = [op]
    for c in children:
        out += tokens(c)
    return out + [END]


def parse(text: str) -> Tree:
    """Parse a token string (parentheses ignored) back into a tree, for hand-made examples."""
    toks = [t for t in text.replace("(", " ").replace(")", " ").split()]
    pos = 0

    def node() -> Tree:
        nonlocal pos
        t = toks[pos]
        pos += 1
        if t in OPERATORS:
            children = []
            while toks[pos] != END:
                children.append(node())
            pos += 1
            return (t, children)
        if t.isdigit() and len(t) == 1:
            return int(t)
        raise ValueError(f"unexpected token {t!r}")

    tree = node()
    if pos != len(toks):
        raise ValueError("trailing tokens")
    return tree


@dataclass(frozen=True)
class ListOpsData:
    """Token ids (N, 1 + max_length) with <cls> first and <pad> after, and labels (N,)."""

    inputs: Tensor
    labels: Tensor
    lengths: Tensor


def generate(n: int, seed: int, min_length: int = 500, max_length: int = 2000, max_depth: int = 10,
             max_args: int = 10, max_tries: int = 10_000_000) -> ListOpsData:
    """n distinct trees with min_length < length < max_length, deterministic by seed."""
    if not 0 <= min_length < max_length - 1:
        raise ConfigError(f"min_length = {min_length}, max_length = {max_length}: need 0 <= min < max - 1")
    rng = random.Random(seed)
    seen: set[tuple[str, ...]] = set()
    rows: list[tuple[list[int], int]] = []
    tries = 0
    while len(rows) < n:
        tries += 1
        if tries > max_tries:
            raise ConfigError(f"listops: found only {len(rows)} of {n} trees with {min_length} < length < "
                              f"{max_length} in {max_tries} tries; widen the range or raise max_depth/max_args")
        tree, length = generate_tree(rng, 1, max_depth, max_args)
        if not min_length < length < max_length:
            continue
        toks = tuple(tokens(tree))
        if toks in seen:
            continue
        seen.add(toks)
        rows.append(([CLS] + [TOKEN_ID[t] for t in toks], evaluate(tree)))
    width = 1 + max(len(r[0]) - 1 for r in rows)
    inputs = torch.full((n, width), PAD, dtype=torch.long)
    for i, (ids, _) in enumerate(rows):
        inputs[i, : len(ids)] = torch.tensor(ids)
    labels = torch.tensor([r[1] for r in rows])
    lengths = torch.tensor([len(r[0]) - 1 for r in rows])
    return ListOpsData(inputs, labels, lengths)
