"""Sweeps: a grid over ``--set`` keys for one or more notebooks, into one folder with one report.

A spec (YAML)::

    notebooks: [02]                 # names or unique prefixes
    profile: smoke
    seeds: [0, 1, 2]                # every point trains every seed; its claims aggregate over them
    set: {train.steps: 40}          # the same at every point
    grid:                           # every combination is one point, one run folder
      train.lr: [1e-3, 3e-3]
      model.d_model: [32, 64]

Every point is planned (and so validated) before any job starts; a bad spec is one line. Each point is a
run folder ``<sweep>/<point>/`` of the usual layout (resumable); with a cluster executor the jobs of all
points are submitted together. ``sweep.md`` and ``claims.csv`` put every point's claims side by side,
with the point's grid values as columns.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import Field, field_validator

from . import runner
from .config import Config, ConfigError, _numbers, validate
from .io import atomic_write_json, atomic_write_text
from .session import project_root


class SweepSpec(Config):
    """What a sweep runs: notebooks, profile, seeds, fixed overrides and the grid."""

    notebooks: list[str] = Field(min_length=1)
    profile: str = "auto"
    seeds: list[int] | None = Field(None, min_length=1, description="the seeds of every point (--set seeds=...)")
    set: dict[str, Any] = Field(default_factory=dict, description="--set overrides shared by every point")
    grid: dict[str, list[Any]] = Field(min_length=1, description="--set key -> the values it takes")
    out: str | None = None

    @field_validator("grid")
    @classmethod
    def _values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid.{key}: needs at least one value")
            if key == "seeds":
                raise ValueError("grid.seeds: seeds are not a grid axis; give them as `seeds:` (every point "
                                 "trains them all and its claims aggregate over them)")
        return grid


def load_spec(path: str | Path) -> SweepSpec:
    """A sweep spec from YAML (numbers in any notation), or a one-line ConfigError."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"sweep spec = {str(p)!r}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"sweep spec {p}: not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sweep spec {p}: expected a mapping with notebooks, grid (and profile, seeds, set, out)")
    names = data.pop("notebooks", None)
    if isinstance(names, list):  # YAML reads 02 as the number 2
        names = [f"{n:02d}" if isinstance(n, int) else str(n) for n in names]
    return validate(SweepSpec, _numbers(data) | ({"notebooks": names} if names is not None else {}), "sweep spec")


def _slug(point: dict[str, Any]) -> str:
    text = ",".join(f"{k}={v}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)[:120]


def points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of the grid, in the spec's order."""
    keys = list(spec.grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(spec.grid[k] for k in keys))]


def plan(spec: SweepSpec, out: str | Path | None = None) -> tuple[Path, list[tuple[dict[str, Any], runner.RunPlan]]]:
    """The sweep folder and one validated run plan per point (nothing is executed)."""
    folder = Path(out or spec.out or project_root() / "outputs" / "sweeps" / "sweep").resolve()
    plans = []
    for i, point in enumerate(points(spec)):
        overrides = dict(spec.set) | point | ({"seeds": list(spec.seeds)} if spec.seeds else {})
        try:
            p = runner.plan(spec.profile, spec.notebooks, folder / f"p{i:02d}-{_slug(point)}", overrides)
        except ConfigError as e:
            raise ConfigError(f"sweep point {_slug(point)}: {e}") from None
        plans.append((point, p))
    return folder, plans


def execute(folder: Path, plans: list[tuple[dict[str, Any], runner.RunPlan]], spec: SweepSpec, *, jobs: int = 1,
            force: bool = False, cell_timeout: int = 4 * 3600, submit: Callable[..., None] | None = None,
            echo: Callable[[str], Any] = print) -> pd.DataFrame:
    """Run every point (in this process one after another, or all at once through `submit`), then write
    the combined report; returns the combined claims table."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "sweep.json", {"spec": spec.model_dump(), "points": [
        {"grid": point, "folder": p.run_dir.name} for point, p in plans]})
    if submit is None:
        for _, p in plans:
            echo(f"point {p.run_dir.name}")
            runner.execute(p, jobs=jobs, force=force, cell_timeout=cell_timeout, echo=echo)
    else:
        started = [(p, *runner.start(p, force, echo)) for _, p in plans]
        submit([(p, todo, _manifest_writer(p, t0)) for p, t0, todo in started], force=force,
               cell_timeout=cell_timeout, echo=echo)
        for p, t0, _ in started:
            runner.finish(p, t0)
    return combine(folder, plans)


def _manifest_writer(p: runner.RunPlan, started: str) -> Callable[[], None]:
    return lambda: runner.write_manifest(p, started, None)


def combine(folder: Path, plans: list[tuple[dict[str, Any], runner.RunPlan]]) -> pd.DataFrame:
    """Every point's claims.csv with its grid values as columns -> claims.csv and sweep.md of the sweep."""
    frames = []
    for point, p in plans:
        path = p.run_dir / "claims.csv"
        if not path.exists():
            continue
        df = pd.read_csv(path)
        for i, (k, v) in enumerate(point.items()):
            df.insert(i, k, str(v))
        df.insert(len(point), "point", p.run_dir.name)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    atomic_write_text(folder / "claims.csv", table.to_csv(index=False))
    lines = [f"# Sweep {folder.name}", "", f"{len(plans)} point(s); each point's claims aggregate over its seeds "
             "(estimate and 95% interval as in each point's report.md).", ""]
    if len(table):
        keys = list(plans[0][0])
        cols = [c for c in [*keys, "notebook", "id", "estimate", "ci_low", "ci_high", "n_seeds", "verdict"]
                if c in table.columns]
        lines.append(_markdown(table[cols]))
        counts = table.groupby([*keys, "verdict"]).size().unstack(fill_value=0) if "verdict" in table else None
        if counts is not None:
            lines += ["", "## Verdicts per point", "", _markdown(counts.reset_index())]
    lines += ["", "Points: " + ", ".join(f"[{p.run_dir.name}]({p.run_dir.name}/report.md)" for _, p in plans)]
    atomic_write_text(folder / "sweep.md", "\n".join(lines) + "\n")
    return table


def _markdown(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    rows = ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])
