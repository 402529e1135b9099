"""A notebook's run: validated config, output folder, figures, and the closing metrics.json.

Every notebook opens with ``nb = attnlab.start(NAME, profile, overrides, out_dir)`` and ends
with ``nb.finish(results)``; bad parameters raise ``ConfigError`` in the first code cell.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import config as C
from . import experiments
from .claims import check_claims
from .environment import collect
from .io import atomic_write_bytes, atomic_write_json


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_out_dir(name: str) -> Path:
    """Where an interactive (non-runner) execution writes: outputs/interactive/<notebook>."""
    return project_root() / "outputs" / "interactive" / name


@dataclass
class NotebookRun:
    """State of one notebook execution."""

    name: str
    profile: str
    overrides: dict[str, Any]
    config: Any
    out_dir: Path
    started: float = field(default_factory=time.time)
    figures: list[str] = field(default_factory=list)

    def save_figure(self, fig: Any, stem: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as <out_dir>/<stem>.png (atomically) and remember it."""
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        path = atomic_write_bytes(self.out_dir / f"{stem}.png", buf.getvalue())
        if path.name not in self.figures:
            self.figures.append(path.name)
        return path

    def finish(self, results: pd.DataFrame, status: str = "completed", error: str | None = None) -> pd.DataFrame:
        """Check the claims, write metrics.json, and return the claims table for display."""
        claims = check_claims(self.name, results, self.profile) if status == "completed" else []
        rows = results.astype(object).where(results.notna(), None).to_dict("records")
        for r in rows:
            for k, v in r.items():
                if isinstance(v, float) and not math.isfinite(v):
                    r[k] = str(v)
        metrics = {
            "notebook": self.name,
            "profile": self.profile,
            "parameters": C.to_dict(self.config),
            "overrides": self.overrides,
            "status": status,
            "error": error,
            "results": rows,
            "claims": claims,
            "figures": self.figures,
            "duration_s": round(time.time() - self.started, 2),
            "environment": collect(),
        }
        atomic_write_json(self.out_dir / "metrics.json", metrics)
        table = pd.DataFrame(claims, columns=["id", "kind", "paper", "statement", "paper_value", "measured",
                                              "threshold", "estimate", "ci_low", "ci_high", "n_seeds", "verdict",
                                              "note"])
        return table


def start(name: str, profile: str = "auto", overrides: dict[str, Any] | None = None,
          out_dir: str = "") -> NotebookRun:
    """Validate a notebook's parameters and prepare its output folder (ConfigError on bad input)."""
    overrides = dict(overrides or {})
    name = experiments.resolve_notebook(name)
    resolved = C.resolve_profile(profile)
    cfg = experiments.load(name, resolved, overrides)
    out = Path(out_dir) if out_dir else default_out_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    return NotebookRun(name, resolved, overrides, cfg, out)
