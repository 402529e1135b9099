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


class NotebookFailed(RuntimeError):
    """Every model of a notebook failed; metrics.json keeps their rows and the reason."""


def all_failed(results: pd.DataFrame) -> str:
    """'' unless every model of a results frame failed; then the cause, e.g. 'every model diverged:
    non-finite loss (nan) at step 4'."""
    if results.empty or "status" not in results:
        return ""
    st = results["status"].dropna()
    failed = results.loc[st.index[st == "failed"]]
    if failed.empty or (st != "failed").any():
        return ""
    errors = failed["error"].dropna().astype(str) if "error" in failed else pd.Series(dtype=str)
    first = errors.iloc[0] if len(errors) else "no error recorded"
    verb = "diverged" if len(errors) and errors.str.contains("non-finite").all() else "failed"
    return f"every model {verb} ({len(failed)} of {len(failed)}): {first}"


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
        """Check the claims, write metrics.json (failed models' rows included), and return the claims table
        for display. When every model of the notebook failed, metrics.json says why and NotebookFailed is
        raised after it is written (the runner's failure line then names the cause)."""
        if status == "completed" and (why := all_failed(results)):
            status, error = "failed", f"{self.name}: {why}"
        claims = check_claims(self.name, results, self.profile)
        rows = []  # each row keeps only its own columns (a tidy frame mixes experiments): missing = NaN
        for r in results.astype(object).where(results.notna(), None).to_dict("records"):
            row = {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()
                   if v is not None}
            rows.append(row)
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
        if status == "failed":
            raise NotebookFailed(error or f"{self.name}: failed")
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
