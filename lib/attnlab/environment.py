"""What a run ran on: versions, device, threads, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "numpy", "pandas", "matplotlib", "papermill", "safetensors")


CODE_PATHS = ("lib", "notebooks", "pyproject.toml", "requirements.lock")


def git_commit(root: Path | None = None) -> str | None:
    """The checked-out commit of the project, with '-dirty' if its code (lib/, notebooks/, the package
    metadata and the lock) has changes not committed; None outside git. Results written under outputs/
    during a run do not make it dirty."""
    root = root or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if uncommitted(CODE_PATHS, root) else "")) if sha else None


def uncommitted(paths: tuple[str, ...] = CODE_PATHS, root: Path | None = None) -> list[str]:
    """Files under `paths` with changes not committed (untracked ones included); [] outside git."""
    root = root or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=root, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:] for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def cpu_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by OMP_NUM_THREADS where the caller set it."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(n, int(limit))) if limit.isdigit() and int(limit) > 0 else max(1, n)


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def collect() -> dict[str, Any]:
    """Versions of the packages that matter, python, platform, device, torch threads and the git commit."""
    import torch

    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "device": device_name(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }
