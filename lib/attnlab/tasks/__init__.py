"""Algorithmic tasks, one per file: the length-generalization suites (registered in TASKS, filled here) and
LRA ListOps."""

from . import cs, dcf, decoder, formal, listops, regular  # noqa: F401
from .base import TASKS, Task, get_task, task_names

__all__ = ["TASKS", "Task", "get_task", "task_names"]
