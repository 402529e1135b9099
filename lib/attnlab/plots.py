"""One consistent figure style for every notebook (matplotlib)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

STYLE = {
    "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "font.size": 10, "legend.frameon": False,
}
plt.rcParams.update(STYLE)

PALETTE = {
    "none": "#7f7f7f", "sinusoidal": "#1f77b4", "learned": "#aec7e8", "rope": "#d62728", "xpos": "#ff9896",
    "alibi": "#2ca02c", "t5": "#9467bd", "kerple": "#8c564b", "fire": "#e377c2", "shaw": "#bcbd22",
    "randomized": "#17becf", "linear": "#ff7f0e", "dynamic": "#ffbb78", "yarn": "#c49c94", "llama3": "#f7b6d2",
}


def color(name: str) -> str | None:
    """The fixed colour of an encoding or variant: 'randomized(X)' has the randomized colour, 'X+randomized'
    (and 'X (state)') the colour of X."""
    if name.startswith("randomized"):
        return PALETTE["randomized"]
    return PALETTE.get(name.split("+")[0].split(" ")[0])


def linestyle(name: str) -> str:
    """Dashed for randomized or otherwise modified variants ('X+randomized', 'X aligned', ...)."""
    return "--" if ("+" in name or " " in name) and not name.startswith("randomized") else "-"


def lines(df: pd.DataFrame, x: str, y: str, hue: str, ax: plt.Axes | None = None, *, logx: bool = False,
          logy: bool = False, title: str = "", xlabel: str | None = None, ylabel: str | None = None,
          marker: str = "") -> Figure:
    """One line per `hue` value of a tidy frame."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.8))
    for key, g in df.groupby(hue, sort=False):
        g = g.sort_values(x)
        ax.plot(g[x], g[y], label=str(key), color=color(str(key)), ls=linestyle(str(key)), marker=marker)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def heatmaps(mats: Mapping[str, np.ndarray], title: str = "", cmap: str = "viridis") -> Figure:
    """A row of matrices (e.g. attention biases), each with its own colour bar."""
    n = len(mats)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        im = ax.imshow(m, cmap=cmap, interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def mark_x(ax: plt.Axes, xs: Iterable[float], label: str = "") -> None:
    """Vertical dashed marks (e.g. the training length)."""
    for i, v in enumerate(xs):
        ax.axvline(v, color="k", ls="--", lw=0.8, label=label if i == 0 and label else None)


def close(fig: Figure) -> None:
    plt.close(fig)
