"""Compiled CPU kernels of attnlab (C++ sources in ``csrc/``), built once per machine at first use.

PyTorch's extension builder compiles a source into the torch-extensions cache (``TORCH_EXTENSIONS_DIR``,
by default ``~/.cache/torch_extensions``) in about ten seconds, for the vector extensions PyTorch itself
dispatches to on this CPU; later processes load the built library. ``ATTNLAB_KERNELS=0`` turns them off.
Without a C++ compiler, or where a build fails, a warning says why once and PyTorch's own kernels run.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import warnings
from pathlib import Path

import torch

from .errors import ConfigError

CSRC = Path(__file__).with_name("csrc")
STEMS = ("small_attention", "fused_mlp")  # csrc/<stem>.cpp
VECTOR_FLAGS = {  # torch.backends.cpu.get_cpu_capability() -> compiler flags of the same vector extensions
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mfma", "-mprefer-vector-width=512"],
    "AVX2": ["-mavx2", "-mfma"],
}
# -ffast-math vectorizes exp, erf and the row sums; the kernels test NaN and inf by their bits, which it keeps
BASE_FLAGS = ["-O3", "-ffast-math", "-fopenmp"]


def enabled() -> bool:
    """Whether compiled kernels may be used: ``ATTNLAB_KERNELS`` unset or ``1`` (``0``: off)."""
    value = os.environ.get("ATTNLAB_KERNELS", "1").strip()
    if value not in ("0", "1"):
        raise ConfigError(f"ATTNLAB_KERNELS = {value!r}: valid choices: 0, 1")
    return value == "1"


def build_flags() -> list[str]:
    """Compiler flags for this CPU."""
    return BASE_FLAGS + VECTOR_FLAGS.get(torch.backends.cpu.get_cpu_capability(), [])


def compiler() -> str | None:
    """The C++ compiler the build would use (``$CXX``, else ``c++``) as found on PATH, or None."""
    return shutil.which(os.environ.get("CXX", "c++"))


def _build(stem: str) -> None:
    """Compile (or load from the cache) csrc/<stem>.cpp; its operators register under ``torch.ops`` (the
    namespace its TORCH_LIBRARY names)."""
    from torch.utils.cpp_extension import load

    try:  # the pip package's ninja, also where the venv's bin is not on PATH (a notebook kernel, `make test`)
        import ninja

        if ninja.BIN_DIR not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass  # a ninja on PATH, or the build fails and says so
    if compiler() is None:
        raise RuntimeError(f"no C++ compiler: {os.environ.get('CXX', 'c++')!r} is not on PATH (install g++, or "
                           f"set CXX)")
    src = CSRC / f"{stem}.cpp"
    key = hashlib.sha256("\0".join([src.read_text(), *build_flags(), torch.__version__]).encode()).hexdigest()
    load(name=f"attnlab_{stem}_{key[:12]}", sources=[str(src)], extra_cflags=build_flags(),
         extra_ldflags=["-fopenmp"], is_python_module=False, verbose=False)


def _first_error(message: str) -> str:
    """The line of a build log that says what went wrong (the compiler's first error), else its last line."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ("error:" in ln.lower() or "not found" in ln or "no such file" in ln.lower())
              and not ln.startswith("Error building")]
    return (errors or lines[-1:] or ["no message"])[0][:300]


@functools.cache
def available(stem: str) -> bool:
    """Whether the kernels of csrc/<stem>.cpp are built and loaded (builds them at the first call)."""
    if stem not in STEMS:
        raise ValueError(f"kernel = {stem!r}: unknown; valid choices: {', '.join(STEMS)}")
    if not enabled():
        return False
    try:
        _build(stem)
    except Exception as e:  # no compiler, no ninja, a platform without the BLAS symbols: PyTorch's kernels run
        warnings.warn(f"attnlab: the compiled CPU kernel '{stem}' is unavailable ({type(e).__name__}: "
                      f"{_first_error(str(e))}); PyTorch's own kernel runs instead (slower; ATTNLAB_KERNELS=0 "
                      f"silences this)", RuntimeWarning, stacklevel=2)
        return False
    return True


def status() -> dict[str, bool]:
    """Which compiled kernels this process runs (recorded with every run's environment)."""
    return {stem: available(stem) for stem in STEMS}


__all__ = ["STEMS", "available", "build_flags", "compiler", "enabled", "status"]
