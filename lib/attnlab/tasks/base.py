"""The task interface and registry: each task samples (inputs, targets, mask) for a length and seed.

Encoder tasks (Deletang et al. 2023) map an input string of length n to an output tape of
``output_length(n)`` classes; ``mask`` marks the tape positions that count (e.g. up to a
termination token). Decoder tasks (Kazemnejad et al. 2023) are the same data read as a
prompt followed by its answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ConfigError
from ..registry import Registry


@dataclass(frozen=True)
class Sample:
    """A batch: inputs (B, n) in [0, input_size), targets (B, m) in [0, output_size), mask (B, m)."""

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray


class Task:
    """Base class of every algorithmic task."""

    name: ClassVar[str] = ""
    level: ClassVar[str] = ""  # regular | dcf | cs | decoder | formal
    input_size: ClassVar[int] = 2
    output_size: ClassVar[int] = 2
    min_length: ClassVar[int] = 1

    def output_length(self, n: int) -> int:
        return 1

    def sample(self, n: int, batch: int, rng: np.random.Generator) -> Sample:
        """`batch` instances of input length n; deterministic for a seeded generator."""
        if n < self.min_length:
            raise ConfigError(f"task {self.name!r}: length {n} is impossible; the minimum is {self.min_length}")
        rows = [self.instance(n, rng) for _ in range(batch)]
        m = self.output_length(n)
        inputs = np.array([r[0] for r in rows], dtype=np.int64)
        targets = np.zeros((batch, m), dtype=np.int64)
        mask = np.zeros((batch, m), dtype=bool)
        for i, (_, out, valid) in enumerate(rows):
            targets[i, : len(out)] = out
            mask[i, :valid] = True
        return Sample(inputs, targets, mask)

    def instance(self, n: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        """One (input, output, number of output positions that count)."""
        raise NotImplementedError


TASKS: Registry[type[Task]] = Registry("task")


def task(name: str, level: str):  # noqa: ANN201
    """Register a task class under `name` at hierarchy `level`."""

    def deco(cls: type[Task]) -> type[Task]:
        cls.name, cls.level = name, level
        return TASKS.register(name)(cls)

    return deco


def get_task(name: str) -> Task:
    """The task registered as `name` (ConfigError listing the valid names otherwise)."""
    return TASKS.get(name, "task")()


def task_names(level: str | None = None) -> list[str]:
    return [n for n, c in TASKS.items() if level is None or c.level == level]

