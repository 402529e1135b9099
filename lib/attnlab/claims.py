"""The registry of paper claims and their checks, and the verdict rule.

A claim names its paper and table/figure, the paper's value, a threshold fixed here in code
(before any result is seen; a threshold changes only in a commit of its own that says why),
and the smallest profile at which it is expected to hold. Its check reads a notebook's tidy
results and returns one or more conditions, each a statistic with its 95% interval
(`stats.py`: resampled over seeds and evaluation units) against a threshold, or the reason
the claim cannot be judged (missing data; a precondition the models failed, e.g. they do
not fit their training lengths).

Verdict: `reproduced` when every condition's interval lies wholly on the claim's side of
its threshold; `not reproduced` when some condition's interval lies wholly on the other
side; otherwise `inconclusive` -- an interval that straddles a threshold, a failed
precondition, fewer seeds than the claim needs, or a profile below the claim's -- and the
row says which. `kind` separates reproductions of a paper's result from implementation
checks (equality with a reference implementation, an exact identity), counted apart.
"""

from __future__ import annotations

import math
import operator
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .config import PROFILE_RANK
from .registry import Registry
from .stats import Estimate, point

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
KINDS = ("reproduction", "check", "measurement")
MIN_SEEDS = 3  # a claim about trained models reads at least this many seeds (below: inconclusive)
OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, "<": operator.lt, ">=": operator.ge,
                                                   ">": operator.gt}


@dataclass(frozen=True)
class Condition:
    """One statistic with its interval, to lie on one side of a fixed threshold."""

    label: str
    estimate: Estimate
    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"op = {self.op!r}: valid choices: {', '.join(OPS)}")

    def holds(self) -> bool | None:
        """True: the whole interval is on the claim's side; False: wholly on the other; None: it straddles."""
        e, f = self.estimate, OPS[self.op]
        if not all(math.isfinite(x) for x in (e.value, e.low, e.high)):
            return None
        if f(e.low, self.threshold) and f(e.high, self.threshold):
            return True
        if not f(e.low, self.threshold) and not f(e.high, self.threshold):
            return False
        return None

    def text(self, fmt: str = ".3f") -> str:
        return f"{self.label} {self.estimate.text(fmt)} (needs {self.op} {self.threshold:g})"


@dataclass(frozen=True)
class Measured:
    """What a check measured: a short readable value, its conditions, or why it cannot be judged."""

    value: str
    conditions: tuple[Condition, ...] = ()
    reason: str = ""  # non-empty: inconclusive (missing data, a failed precondition)
    seeded: bool = field(default=True)  # reads trained models: needs MIN_SEEDS seeds

    @classmethod
    def missing(cls, reason: str) -> Measured:
        """No data (or a failed precondition): inconclusive, with the reason."""
        return cls(reason, (), reason)

    @classmethod
    def exact(cls, value: str, label: str, x: float, op: str, threshold: float) -> Measured:
        """A quantity without sampling noise (an implementation check, an analytic curve)."""
        return cls(value, (Condition(label, point(x), op, threshold),), seeded=False)


Check = Callable[[pd.DataFrame], Measured]


@dataclass(frozen=True)
class Claim:
    """One paper claim, with a threshold fixed in code and its check."""

    id: str
    notebook: str
    paper: str
    statement: str
    paper_value: str
    threshold: str
    check: Check
    min_profile: str = "smoke"
    kind: str = "reproduction"

    def evaluate(self, results: pd.DataFrame, profile: str) -> dict[str, object]:
        """The claim's verdict row for a notebook's results at `profile`."""
        try:
            m = self.check(results)
        except Exception as e:  # a failing check is reported, never hidden
            m = Measured.missing(f"check failed: {type(e).__name__}: {e}")
            traceback.print_exc()
        verdict, reason = verdict_of(m)
        primary = m.conditions[0].estimate if m.conditions else None
        n_seeds = min((c.estimate.n_seeds for c in m.conditions), default=0)
        if verdict != INCONCLUSIVE and m.seeded and n_seeds < MIN_SEEDS:
            verdict, reason = INCONCLUSIVE, f"{n_seeds} seed(s); a verdict needs at least {MIN_SEEDS}"
        if verdict != INCONCLUSIVE and PROFILE_RANK.get(profile, 0) < PROFILE_RANK[self.min_profile]:
            verdict, reason = INCONCLUSIVE, f"expected to hold from profile '{self.min_profile}'; this run is '{profile}'"
        return {
            "id": self.id, "notebook": self.notebook, "kind": self.kind, "paper": self.paper,
            "statement": self.statement, "paper_value": self.paper_value, "measured": m.value,
            "threshold": self.threshold, "estimate": primary.value if primary else float("nan"),
            "ci_low": primary.low if primary else float("nan"), "ci_high": primary.high if primary else float("nan"),
            "n_seeds": n_seeds, "verdict": verdict, "note": reason,
        }


def verdict_of(m: Measured) -> tuple[str, str]:
    """The verdict of measured conditions and, when inconclusive, why."""
    if m.reason:
        return INCONCLUSIVE, m.reason
    if not m.conditions:
        return INCONCLUSIVE, "no condition measured"
    held = [c.holds() for c in m.conditions]
    failed = [c for c, h in zip(m.conditions, held) if h is False]
    if failed:
        return NOT_REPRODUCED, "; ".join(f"wholly on the other side: {c.text()}" for c in failed)
    open_ = [c for c, h in zip(m.conditions, held) if h is None]
    if open_:
        return INCONCLUSIVE, "; ".join(f"interval straddles the threshold: {c.text()}" for c in open_)
    return REPRODUCED, ""


CLAIMS: Registry[Claim] = Registry("claim")


def claim(id: str, *, notebook: str, paper: str, statement: str, paper_value: str, threshold: str,
          min_profile: str = "smoke", kind: str = "reproduction") -> Callable[[Check], Check]:
    """Decorator: register the decorated check function as a claim."""
    if kind not in KINDS:
        raise ValueError(f"kind = {kind!r}: valid choices: {', '.join(KINDS)}")

    def deco(fn: Check) -> Check:
        CLAIMS.register(id)(Claim(id, notebook, paper, statement, paper_value, threshold, fn, min_profile, kind))
        return fn

    return deco


def claims_for(notebook: str) -> list[Claim]:
    """The claims a notebook checks, in registration order (registered by the experiment modules)."""
    return [c for _, c in CLAIMS.items() if c.notebook == notebook]


def check_claims(notebook: str, results: pd.DataFrame, profile: str) -> list[dict[str, object]]:
    """Verdict rows for every claim of `notebook`."""
    return [c.evaluate(results, profile) for c in claims_for(notebook)]


def select(df: pd.DataFrame, **where: object) -> pd.DataFrame:
    """Rows of a tidy frame matching every column=value given."""
    mask = pd.Series(True, index=df.index)
    for k, v in where.items():
        if k not in df.columns:
            return df.iloc[0:0]
        mask &= df[k] == v
    return df[mask]


def unit_matrix(rows: pd.DataFrame, by: list[str], columns: list[tuple[object, ...]], value: str,
                unit: str) -> np.ndarray:
    """`value` as (seeds, units, len(columns)): one column per key tuple of `columns` over the `by` fields,
    keeping only seeds that have every unit of every column (so resamples stay paired); empty when a
    column is missing."""
    empty = np.empty((0, 0, len(columns)))
    if rows.empty or any(c not in rows for c in (*by, value, unit, "seed")):
        return empty
    wide = rows.pivot_table(index=["seed", unit], columns=by, values=value)
    keys = [c if len(by) > 1 else c[0] for c in columns]
    if any(k not in wide.columns for k in keys):
        return empty
    wide = wide.reindex(columns=keys).dropna()  # reindex: a list of booleans would index as a mask
    if wide.empty:
        return empty
    seeds = sorted(wide.index.get_level_values(0).unique())
    units = sorted(wide.index.get_level_values(1).unique())
    full = wide.reindex(pd.MultiIndex.from_product([seeds, units]))
    full = full[full.notna().all(axis=1).groupby(level=0).transform("all")]  # seeds with every unit
    n_seeds = full.index.get_level_values(0).nunique()
    return full.to_numpy().reshape(n_seeds, -1, len(columns)) if n_seeds else empty
