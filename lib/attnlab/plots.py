"""One figure style for every notebook: seaborn's theme and its relational and categorical plots.

Each encoding and attention variant keeps one colour across notebooks; modified variants
('X+randomized', 'X aligned', ...) are dashed. Where a frame holds several rows per x (seeds,
segments), the line is their mean with a 95% confidence band.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85,
              rc={"axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False, "figure.dpi": 100})

PALETTE = {
    "none": "#7f7f7f", "sinusoidal": "#1f77b4", "learned": "#aec7e8", "rope": "#d62728", "xpos": "#ff9896",
    "alibi": "#2ca02c", "t5": "#9467bd", "kerple": "#8c564b", "fire": "#e377c2", "shaw": "#bcbd22",
    "randomized": "#17becf", "linear": "#ff7f0e", "dynamic": "#ffbb78", "yarn": "#c49c94", "llama3": "#f7b6d2",
}


def color(name: str) -> str | None:
    """The fixed colour of an encoding or variant: 'randomized(X)' has the randomized colour, 'X+randomized'
    (and 'X (state)') the colour of X; None for names without one."""
    if name.startswith("randomized"):
        return PALETTE["randomized"]
    return PALETTE.get(name.split("+")[0].split(" ")[0])


def linestyle(name: str) -> str:
    """Dashed for randomized or otherwise modified variants ('X+randomized', 'X aligned', ...)."""
    return "--" if ("+" in name or " " in name) and not name.startswith("randomized") else "-"


def palette(names: Iterable[str]) -> dict[str, object]:
    """A colour for every name: the fixed ones where known, seaborn's palette for the rest."""
    names = list(dict.fromkeys(names))
    spare = iter(sns.color_palette("tab20", len(names)))
    return {n: color(n) or next(spare) for n in names}


def lines(df: pd.DataFrame, x: str, y: str, hue: str, ax: plt.Axes | None = None, *, logx: bool = False,
          logy: bool = False, title: str = "", xlabel: str | None = None, ylabel: str | None = None,
          marker: str = "", units: str | None = "seed") -> Figure:
    """One line per `hue` value of a tidy frame (seaborn lineplot; mean and 95% band over repeated rows), and
    a thin line per `units` value (each seed) where the frame has that column with more than one value."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.8))
    if df.empty or not {x, y, hue} <= set(df.columns) or df[y].isna().all():
        ax.text(0.5, 0.5, "no data (see the failures above)", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        return fig
    d = df.assign(**{hue: df[hue].astype(str)})
    names = list(dict.fromkeys(d[hue]))
    dashes = {n: (4, 2) if linestyle(n) == "--" else "" for n in names}
    sns.lineplot(data=d, x=x, y=y, hue=hue, style=hue, hue_order=names, style_order=names, palette=palette(names),
                 dashes=dashes, markers={n: marker for n in names} if marker else False, errorbar=("ci", 95),
                 sort=True, ax=ax)
    if units and units in d and d[units].nunique() > 1:
        sns.lineplot(data=d, x=x, y=y, hue=hue, hue_order=names, palette=palette(names), units=units,
                     estimator=None, lw=0.6, alpha=0.35, sort=True, ax=ax, legend=False)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    if title:
        ax.set_title(title)
    if ax.get_legend() is not None:
        ax.legend(fontsize=8)
    return fig


def intervals(df: pd.DataFrame, x: str, y: str, low: str, high: str, hue: str, ax: plt.Axes | None = None, *,
              logx: bool = False, title: str = "", xlabel: str | None = None, ylabel: str | None = None) -> Figure:
    """One line per `hue` value with a band between precomputed interval columns `low` and `high` (for
    intervals that seaborn cannot compute itself, e.g. a bootstrap over seeds and units)."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.8))
    if df.empty or df[y].isna().all():
        ax.text(0.5, 0.5, "no data (see the failures above)", ha="center", va="center", transform=ax.transAxes)
    else:
        names = list(dict.fromkeys(df[hue].astype(str)))
        colours = palette(names)
        for name in names:
            g = df[df[hue].astype(str) == name].sort_values(x)
            ax.plot(g[x], g[y], marker="o", ms=3, color=colours[name], ls=linestyle(name), label=name)
            ax.fill_between(g[x], g[low], g[high], color=colours[name], alpha=0.15, lw=0)
        ax.legend(fontsize=8)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    if title:
        ax.set_title(title)
    return fig


def bars(df: pd.DataFrame, x: str, y: str, hue: str | None = None, ax: plt.Axes | None = None, *, title: str = "",
         xlabel: str | None = None, ylabel: str | None = None, points: bool = True) -> Figure:
    """A bar per `x` (and `hue`) of a tidy frame (seaborn barplot; 95% interval over repeated rows), with
    each row (seed) as a point when `points`."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 3.6))
    sns.barplot(data=df, x=x, y=y, hue=hue, errorbar=("ci", 95), ax=ax)
    if points and df.groupby([x] + ([hue] if hue else [])).size().max() > 1:
        sns.stripplot(data=df, x=x, y=y, hue=hue, dodge=hue is not None, color="k", size=3, alpha=0.6, ax=ax,
                      legend=False)
    ax.set_xlabel(xlabel if xlabel is not None else x)
    ax.set_ylabel(ylabel or y)
    ax.tick_params(axis="x", labelrotation=30)
    if title:
        ax.set_title(title)
    return fig


def heatmaps(mats: Mapping[str, np.ndarray], title: str = "", cmap: str = "viridis") -> Figure:
    """A row of matrices (e.g. attention biases), each with its own colour bar (seaborn heatmap)."""
    n = len(mats)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        sns.heatmap(m, cmap=cmap, ax=ax, square=True, xticklabels=False, yticklabels=False,
                    cbar_kws={"fraction": 0.046, "pad": 0.04})
        ax.set_title(name)
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def needle_maps(tables: Mapping[str, pd.DataFrame], title: str = "", cols: int = 3) -> Figure:
    """Needle-in-a-haystack maps: accuracy (0..1) as depth (rows) x length (columns), one panel per model."""
    n = max(1, len(tables))
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, min(cols, n), figsize=(3.4 * min(cols, n), 2.8 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, t) in zip(axes.flat, tables.items()):
        if t.empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.heatmap(t, vmin=0, vmax=1, cmap="RdYlGn", annot=t.shape[1] <= 8, fmt=".2f", annot_kws={"size": 7},
                        cbar=False, ax=ax, yticklabels=[f"{d:.0%}" for d in t.index])
        ax.set_title(name)
        ax.set_xlabel("length")
        ax.set_ylabel("depth")
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
