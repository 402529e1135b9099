"""The registry of paper claims and their checks.

A claim names its paper and table/figure, the paper's value, a threshold fixed here in code
(before any result is seen), and the smallest profile at which it is expected to hold. Its
check reads a notebook's tidy results and returns what was measured and whether the
threshold is met. Below its profile the verdict is ``inconclusive``, whatever the number.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from .config import PROFILE_RANK
from .registry import Registry

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)


@dataclass(frozen=True)
class Measured:
    """What a check measured: a short human-readable value and whether the threshold is met."""

    value: str
    passed: bool | None  # None: the data needed was missing (inconclusive)


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

    def evaluate(self, results: pd.DataFrame, profile: str) -> dict[str, str]:
        """The claim's verdict row for a notebook's results at `profile`."""
        try:
            m = self.check(results)
        except Exception as e:  # a failing check is reported, never hidden
            m = Measured(f"check failed: {type(e).__name__}: {e}", None)
            traceback.print_exc()
        if m.passed is None:
            verdict = INCONCLUSIVE
        elif PROFILE_RANK.get(profile, 0) < PROFILE_RANK[self.min_profile]:
            verdict = INCONCLUSIVE
        else:
            verdict = REPRODUCED if m.passed else NOT_REPRODUCED
        note = ""
        if verdict == INCONCLUSIVE and m.passed is not None:
            note = f"expected to hold from profile '{self.min_profile}'; this run is '{profile}'"
        return {
            "id": self.id, "notebook": self.notebook, "paper": self.paper, "statement": self.statement,
            "paper_value": self.paper_value, "measured": m.value, "threshold": self.threshold,
            "verdict": verdict, "note": note,
        }


CLAIMS: Registry[Claim] = Registry("claim")


def claim(id: str, *, notebook: str, paper: str, statement: str, paper_value: str, threshold: str,
          min_profile: str = "smoke") -> Callable[[Check], Check]:
    """Decorator: register the decorated check function as a claim."""

    def deco(fn: Check) -> Check:
        CLAIMS.register(id)(Claim(id, notebook, paper, statement, paper_value, threshold, fn, min_profile))
        return fn

    return deco


def claims_for(notebook: str) -> list[Claim]:
    """The claims a notebook checks, in registration order (registered by the experiment modules)."""
    return [c for _, c in CLAIMS.items() if c.notebook == notebook]


def check_claims(notebook: str, results: pd.DataFrame, profile: str) -> list[dict[str, str]]:
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
