"""A run folder's report: claims.csv, report.md and a self-contained report.html."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd

from .io import atomic_write_text, read_json

CLAIM_COLUMNS = ["notebook", "id", "kind", "paper", "statement", "paper_value", "measured", "threshold", "estimate",
                 "ci_low", "ci_high", "n_seeds", "verdict", "note"]
SHOWN = ["id", "kind", "paper", "paper_value", "measured", "threshold", "verdict", "note"]
VERDICT_COLOURS = {"reproduced": "#d8f0d8", "not reproduced": "#f8d8d8", "inconclusive": "#f4eccc"}


def _notebooks(run_dir: Path) -> list[dict[str, Any]]:
    manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").exists() else {}
    names = list(manifest.get("notebooks", {})) or sorted(p.parent.name for p in run_dir.glob("*/metrics.json"))
    out = []
    for n in names:
        m_path = run_dir / n / "metrics.json"
        metrics = read_json(m_path) if m_path.exists() else {"notebook": n, "status": "not run", "claims": []}
        metrics.setdefault("figures", sorted(p.name for p in (run_dir / n).glob("*.png")))
        out.append(metrics)
    return out


def claims_frame(run_dir: Path) -> pd.DataFrame:
    """Every notebook's claim rows in one table."""
    rows = []
    for m in _notebooks(run_dir):
        for c in m.get("claims", []):
            rows.append({k: c.get(k, m["notebook"] if k == "notebook" else "") for k in CLAIM_COLUMNS})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def verdict_summary(claims: pd.DataFrame) -> str:
    """Verdict counts, reproductions apart from implementation checks and measurements."""
    if claims.empty:
        return "no claims checked"
    parts = []
    for kind, g in claims.groupby(claims["kind"].replace("", "reproduction"), sort=False):
        counts = g["verdict"].value_counts().to_dict()
        parts.append(f"{kind}s: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return "; ".join(parts)


def _md_table(df: pd.DataFrame, cols: list[str]) -> str:
    if df.empty:
        return "_no claims_\n"
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join("| " + " | ".join(str(r[c]).replace("|", "\\|").replace("\n", " ") for c in cols) + " |\n"
                   for _, r in df.iterrows())
    return head + body


def render(run_dir: str | Path) -> Path:
    """(Re)write claims.csv, report.md and report.html of a run folder; returns report.html."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").exists() and not list(run_dir.glob("*/metrics.json")):
        from .errors import ConfigError

        raise ConfigError(f"report: {run_dir} is not a run folder (no manifest.json or */metrics.json)")
    manifest = read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").exists() else {}
    nbs = _notebooks(run_dir)
    claims = claims_frame(run_dir)
    atomic_write_text(run_dir / "claims.csv", claims.to_csv(index=False))
    summary = verdict_summary(claims)
    env = manifest.get("environment", {})
    cols = SHOWN

    md = [f"# attnlab report: {run_dir.name}\n",
          f"- profile: **{manifest.get('profile', '?')}**; commit `{manifest.get('git_commit')}`; "
          f"device: {env.get('device', '?')}; torch {env.get('packages', {}).get('torch', '?')}",
          f"- started {manifest.get('started', '?')}, ended {manifest.get('ended', '?')}",
          f"- claims: {summary}\n"]
    parts = []
    for m in nbs:
        name = m["notebook"]
        md.append(f"## {name}\n")
        md.append(f"status: **{m.get('status')}**" + (f", {m['duration_s']} s" if m.get("duration_s") else "")
                  + (f"  \nerror: `{m['error']}`" if m.get("error") else "") + "\n")
        for f in m.get("figures", []):
            md.append(f"![{f}]({name}/{f})\n")
        sub = claims[claims["notebook"] == name]
        md.append(_md_table(sub, cols))
        parts.append((m, sub))
    md.append("## All claims\n")
    md.append(_md_table(claims, ["notebook", *cols]))
    atomic_write_text(run_dir / "report.md", "\n".join(md))
    return _render_html(run_dir, manifest, parts, claims, summary)


def _html_table(df: pd.DataFrame, cols: list[str]) -> str:
    if df.empty:
        return "<p><em>no claims</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for _, r in df.iterrows():
        bg = VERDICT_COLOURS.get(str(r["verdict"]), "")
        cells = "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols)
        rows.append(f'<tr style="background:{bg}">{cells}</tr>')
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _render_html(run_dir: Path, manifest: dict[str, Any], parts: list[tuple[dict[str, Any], pd.DataFrame]],
                 claims: pd.DataFrame, summary: str) -> Path:
    env = manifest.get("environment", {})
    cols = SHOWN
    body = [f"<h1>attnlab report: {html.escape(run_dir.name)}</h1>",
            f"<p>profile <b>{html.escape(str(manifest.get('profile', '?')))}</b> &middot; commit "
            f"<code>{html.escape(str(manifest.get('git_commit')))}</code> &middot; "
            f"{html.escape(str(env.get('device', '?')))} &middot; claims: {html.escape(summary)}</p>"]
    for m, sub in parts:
        name = m["notebook"]
        body.append(f"<h2>{html.escape(name)}</h2><p>status <b>{html.escape(str(m.get('status')))}</b>"
                    + (f", {m['duration_s']} s" if m.get("duration_s") else "")
                    + (f"<br><code>{html.escape(str(m['error']))}</code>" if m.get("error") else "") + "</p>")
        for f in m.get("figures", []):
            p = run_dir / name / f
            if p.exists():
                data = base64.b64encode(p.read_bytes()).decode()
                body.append(f'<figure><img alt="{html.escape(f)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(f)}</figcaption></figure>")
        body.append(_html_table(sub, cols))
    body.append("<h2>All claims</h2>" + _html_table(claims, ["notebook", *cols]))
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:4px 6px;vertical-align:top}th{background:#eee}img{max-width:100%}"
             "figure{margin:1em 0}figcaption{font-size:12px;color:#666}")
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>attnlab {html.escape(run_dir.name)}</title>"
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    return atomic_write_text(run_dir / "report.html", doc)
