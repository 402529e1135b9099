"""An experiment's results reused between executions of the same code with the same inputs (opt-in).

Off unless ``ATTNLAB_RESULTS_CACHE`` names a folder. The test suite sets it so that papermill's smoke run of
a notebook and nbval's execution of the same notebook compute its results once between them, as the model
cache does for training; each execution still runs every cell, figures and claims included. The key hashes
the function's name, its bound arguments (``progress`` aside), Python's and torch's versions and every
source file of the library: any change to the code computes afresh.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import pickle
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import torch
from pydantic import BaseModel

from .config import to_dict
from .errors import ConfigError
from .io import atomic_write_bytes

ENV = "ATTNLAB_RESULTS_CACHE"
P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def source_digest() -> str:
    """sha256 of every Python source file of the library (relative path and contents)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def fingerprint(x: Any) -> Any:
    """A JSON-able value that differs wherever the inputs could give different results."""
    if x is None or isinstance(x, str | int | float | bool):
        return x
    if isinstance(x, BaseModel):
        return [type(x).__qualname__, to_dict(x)]
    if isinstance(x, torch.Tensor):
        data = x.detach().cpu().contiguous()
        return ["tensor", str(data.dtype), list(data.shape), hashlib.sha256(data.view(torch.uint8).numpy()).hexdigest()]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return [type(x).__qualname__, {f.name: fingerprint(getattr(x, f.name)) for f in dataclasses.fields(x)}]
    if isinstance(x, tuple | list):
        return [fingerprint(v) for v in x]
    if isinstance(x, Mapping):
        return {str(k): fingerprint(v) for k, v in sorted(x.items())}
    raise TypeError(f"results cache: no fingerprint for a {type(x).__name__}")


def memoized(fn: Callable[P, R]) -> Callable[P, R]:
    """Read `fn`'s result back from ATTNLAB_RESULTS_CACHE where the same code ran it on the same inputs."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        root = os.environ.get(ENV)
        if not root:
            return fn(*args, **kwargs)
        if Path(root).exists() and not Path(root).is_dir():  # before any work, not after it
            raise ConfigError(f"{ENV} = '{root}': not a folder")
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        inputs = {k: v for k, v in bound.arguments.items() if k != "progress"}  # a progress bar changes nothing
        payload = [fn.__module__, fn.__qualname__, source_digest(), sys.version, torch.__version__,
                   fingerprint(inputs)]
        key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
        path = Path(root) / f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}.{key}.pkl"
        if path.exists():
            return pickle.loads(path.read_bytes())
        out = fn(*args, **kwargs)
        atomic_write_bytes(path, pickle.dumps(out))  # unique temporary file, then a rename: processes may share it
        return out

    return wrapper


__all__ = ["ENV", "memoized", "fingerprint", "source_digest"]
