"""Two run folders side by side: which verdicts changed, estimates with their intervals, and each
notebook's main curves of both runs overlaid on shared axes (one self-contained HTML page).

What a researcher needs after adding a variant or changing a setting: `attnlab compare RUN_A RUN_B`.
The curves come from each run's metrics.json (tidy results), so both runs are re-plotted on one axis
(run A solid, run B dashed) rather than their PNGs set side by side.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from . import plots
from .errors import ConfigError
from .io import atomic_write_text, read_json
from .report import claims_frame, interval

# notebook -> (title, rows where column == value, x, y, hue, log x) of its main curves
CURVES: dict[str, list[tuple[str, dict[str, object], str, str, str, bool]]] = {
    "02_lm_length_extrapolation": [("bits per byte by evaluation length (non-overlapping)",
                                    {"experiment": "eval", "protocol": "nonoverlapping"}, "length", "bpb",
                                    "encoding", True)],
    "03_algorithmic_length_generalization": [("accuracy by length", {"status": "ok"}, "length", "accuracy", "pe",
                                              False)],
    "04_efficient_attention_speed": [("forward time by length", {"experiment": "timing", "mode": "fwd",
                                                                  "status": "ok"}, "length", "time_s", "variant",
                                      True)],
    "05_efficient_attention_listops": [],
    "06_implicit_position": [("position probe R^2 by layer", {"experiment": "probe", "state": "trained"}, "layer",
                              "value", "model", False)],
    "07_attention_scaling_and_rope_extension": [("RoPE extension: bpb by length",
                                                 {"experiment": "rope_extension", "finetuned": False}, "length",
                                                 "bpb", "method", True)],
}


def _run_dir(path: str | Path) -> Path:
    p = Path(path)
    if not (p / "manifest.json").exists() and not list(p.glob("*/metrics.json")):
        raise ConfigError(f"compare: {p} is not a run folder (no manifest.json or */metrics.json)")
    return p


def compare_claims(a: Path, b: Path) -> pd.DataFrame:
    """One row per claim of either run: verdicts, estimates with intervals, and whether the verdict changed."""
    ca, cb = claims_frame(a), claims_frame(b)
    keys = ["notebook", "id"]
    ca = ca.assign(interval=ca.apply(interval, axis=1) if len(ca) else [])
    cb = cb.assign(interval=cb.apply(interval, axis=1) if len(cb) else [])
    m = ca[keys + ["verdict", "interval", "n_seeds"]].merge(cb[keys + ["verdict", "interval", "n_seeds"]], on=keys,
                                                               how="outer", suffixes=("_a", "_b"))
    m = m.fillna({"verdict_a": "absent", "verdict_b": "absent", "interval_a": "", "interval_b": ""})
    m["changed"] = m["verdict_a"] != m["verdict_b"]
    return m.sort_values(["changed", "notebook", "id"], ascending=[False, True, True]).reset_index(drop=True)


def _results(run: Path, notebook: str) -> pd.DataFrame:
    p = run / notebook / "metrics.json"
    return pd.DataFrame(read_json(p).get("results", [])) if p.exists() else pd.DataFrame()


def _overlay(a: Path, b: Path, notebook: str) -> list[tuple[str, str]]:
    """(title, PNG as base64) of each main curve of `notebook` with both runs on one axis."""
    out = []
    for title, where, x, y, hue, logx in CURVES.get(notebook, []):
        frames = []
        for label, run in (("A", a), ("B", b)):
            r = _results(run, notebook)
            for k, v in where.items():
                r = r[r[k] == v] if k in r else r.iloc[0:0]
            if len(r) and {x, y, hue} <= set(r.columns):
                frames.append(r.assign(series=r[hue].astype(str) + (" (B)" if label == "B" else "")))
        if not frames:
            continue
        d = pd.concat(frames, ignore_index=True).dropna(subset=[y])
        fig = plots.lines(d, x, y, "series", logx=logx, marker="o", title=title, units=None)
        if fig.axes[0].get_legend() is not None:  # two runs' worth of names: beside the axes, not over them
            fig.axes[0].legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plots.close(fig)
        out.append((title, base64.b64encode(buf.getvalue()).decode()))
    return out


def compare(run_a: str | Path, run_b: str | Path, out: str | Path | None = None) -> tuple[pd.DataFrame, Path]:
    """The claims comparison and the path of the HTML page (default: RUN_B/compare.html)."""
    a, b = _run_dir(run_a), _run_dir(run_b)
    table = compare_claims(a, b)
    e = html.escape
    rows = "".join(
        f'<tr style="background:{"#fbe4e2" if r.changed else ""}"><td>{e(r.notebook)}</td><td>{e(r.id)}</td>'
        f"<td>{e(str(r.verdict_a))}</td><td>{e(str(r.interval_a))}</td><td>{e(str(r.verdict_b))}</td>"
        f"<td>{e(str(r.interval_b))}</td><td>{'changed' if r.changed else ''}</td></tr>" for r in table.itertuples())
    body = [f"<h1>attnlab compare</h1><p>A = <code>{e(str(a))}</code> (solid), B = <code>{e(str(b))}</code> "
            f"(dashed, '(B)')</p><p><b>{int(table['changed'].sum())}</b> of {len(table)} verdicts changed</p>",
            "<table><tr><th>notebook</th><th>claim</th><th>verdict A</th><th>estimate A [95%]</th><th>verdict B</th>"
            f"<th>estimate B [95%]</th><th></th></tr>{rows}</table>"]
    for nb in sorted(set(table["notebook"])):
        figs = _overlay(a, b, nb)
        if figs:
            body.append(f"<h2>{e(nb)}</h2>" + "".join(
                f'<figure><img alt="{e(t)}" src="data:image/png;base64,{d}"><figcaption>{e(t)}</figcaption></figure>'
                for t, d in figs))
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}table{border-"
             "collapse:collapse;font-size:12.5px}td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}"
             "figure{display:inline-block;max-width:48%;margin:.5em}figcaption{font-size:12px;color:#555}")
    path = Path(out) if out else b / "compare.html"
    atomic_write_text(path, f"<!doctype html><html><head><meta charset='utf-8'><title>attnlab compare</title>"
                            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    return table, path


def terminal_table(table: pd.DataFrame, all_rows: bool = False) -> str:
    """The changed verdicts (all claims with `all_rows`) as a short text table."""
    t = table if all_rows else table[table["changed"]]
    if t.empty:
        return "no verdict changed"
    cols = ["notebook", "id", "verdict_a", "interval_a", "verdict_b", "interval_b"]
    return t[cols].assign(notebook=t["notebook"].str[:2]).to_string(index=False)
