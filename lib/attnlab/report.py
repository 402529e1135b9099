"""A run folder's report: claims.csv, report.md and a self-contained report.html.

Both read in the same order: the summary (verdict counts per kind, the claims table with
estimate, 95% interval and verdict, each row linked to its notebook's section), a table of
contents, one section per notebook (status, captioned figures, its claims), and the run's
provenance (commit and whether the code was clean, package versions, device, seeds, wall
time per notebook). The HTML embeds its figures and a few lines of plain JavaScript that
filter the claims table by notebook, verdict and paper: no network, no CDN.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .io import atomic_write_text, read_json

CLAIM_COLUMNS = ["notebook", "id", "kind", "paper", "statement", "paper_value", "measured", "threshold", "estimate",
                 "ci_low", "ci_high", "n_seeds", "verdict", "note"]
VERDICT_COLOURS = {"reproduced": "#1b7f3b", "not reproduced": "#b3261e", "inconclusive": "#8a6d00"}
VERDICT_BG = {"reproduced": "#e3f3e6", "not reproduced": "#fbe4e2", "inconclusive": "#f7f0d6"}


def _manifest(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").exists() else {}


def _notebooks(run_dir: Path) -> list[dict[str, Any]]:
    manifest = _manifest(run_dir)
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


def verdict_counts(claims: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{kind: {verdict: count}} (kinds in the order reproduction, check, measurement)."""
    out: dict[str, dict[str, int]] = {}
    if claims.empty:
        return out
    kinds = claims["kind"].replace("", "reproduction").fillna("reproduction")
    for kind in ("reproduction", "check", "measurement"):
        g = claims[kinds == kind]
        if len(g):
            out[kind] = {v: int((g["verdict"] == v).sum()) for v in ("reproduced", "not reproduced", "inconclusive")}
    return out


def verdict_summary(claims: pd.DataFrame) -> str:
    """Verdict counts, reproductions apart from implementation checks and measurements."""
    counts = verdict_counts(claims)
    if not counts:
        return "no claims checked"
    return "; ".join(f"{k}s: " + ", ".join(f"{n} {v}" for v, n in c.items() if n) for k, c in counts.items())


def interval(row: pd.Series) -> str:
    """'1.234 [1.200, 1.270]' from a claim row ('' when nothing was measured)."""
    vals = [row.get(k) for k in ("estimate", "ci_low", "ci_high")]
    try:
        est, lo, hi = (float(v) for v in vals)
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(est):
        return ""
    fmt = lambda x: f"{x:.4g}"  # noqa: E731
    return fmt(est) if lo == hi == est else f"{fmt(est)} [{fmt(lo)}, {fmt(hi)}]"


def _anchor(name: str) -> str:
    return f"nb-{name}"


def _caption(figure: str) -> str:
    return figure.removesuffix(".png").replace("_", " ")


def _provenance(manifest: dict[str, Any], nbs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    env = manifest.get("environment", {})
    commit = str(manifest.get("git_commit") or "unknown")
    rows = [("profile", str(manifest.get("profile", "?"))),
            ("commit", commit.removesuffix("-dirty") + (" (uncommitted code changes)" if commit.endswith("-dirty")
                                                        else " (code clean)")),
            ("device", str(env.get("device", "?"))),
            ("packages", ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())),
            ("python", str(env.get("python", "?"))),
            ("started / ended", f"{manifest.get('started', '?')} / {manifest.get('ended', '?')}")]
    per = manifest.get("notebooks", {})
    for m in nbs:
        e = per.get(m["notebook"], {})
        seeds = ", ".join(f"{k}={v}" for k, v in (e.get("seeds") or {}).items()) or "-"
        nb_commit = str(e.get("git_commit") or commit)[:12]
        rows.append((m["notebook"], f"{m.get('status')}, {e.get('duration_s', m.get('duration_s', '?'))} s, "
                                    f"commit {nb_commit}, seeds {seeds}"))
    return rows


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
    manifest, nbs = _manifest(run_dir), _notebooks(run_dir)
    claims = claims_frame(run_dir)
    atomic_write_text(run_dir / "claims.csv", claims.to_csv(index=False))
    table = claims.assign(interval=claims.apply(interval, axis=1) if len(claims) else [])
    cols = ["notebook", "id", "kind", "paper", "paper_value", "measured", "interval", "threshold", "n_seeds",
            "verdict", "note"]

    md = [f"# attnlab report: {run_dir.name}\n", "## Summary\n"]
    for kind, c in verdict_counts(claims).items():
        md.append(f"- {kind}s: " + ", ".join(f"**{n}** {v}" for v, n in c.items()))
    md.append("")
    md.append(_md_table(table, cols))
    md.append("## Contents\n")
    md += [f"- [{m['notebook']}](#{_anchor(m['notebook'])})" for m in nbs] + ["- [Provenance](#provenance)\n"]
    for m in nbs:
        name = m["notebook"]
        md.append(f'<a id="{_anchor(name)}"></a>\n\n## {name}\n')
        md.append(f"status: **{m.get('status')}**" + (f", {m['duration_s']} s" if m.get("duration_s") else "")
                  + (f"  \nerror: `{m['error']}`" if m.get("error") else "") + "\n")
        for f in m.get("figures", []):
            md.append(f"![{_caption(f)}]({name}/{f})  \n*{name}: {_caption(f)}*\n")
        md.append(_md_table(table[table["notebook"] == name], [c for c in cols if c != "notebook"]))
    md.append('<a id="provenance"></a>\n\n## Provenance\n')
    md += [f"- **{k}**: {v}" for k, v in _provenance(manifest, nbs)]
    atomic_write_text(run_dir / "report.md", "\n".join(md) + "\n")
    return _render_html(run_dir, manifest, nbs, table, cols)


def _badge(verdict: str) -> str:
    c = VERDICT_COLOURS.get(verdict, "#555")
    return f'<span class="badge" style="background:{c}">{html.escape(verdict)}</span>'


def _claims_html(df: pd.DataFrame, cols: list[str], filterable: bool = False) -> str:
    if df.empty:
        return "<p><em>no claims</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            if c == "verdict":
                cells.append(f"<td>{_badge(str(r[c]))}</td>")
            elif c == "notebook":
                cells.append(f'<td><a href="#{_anchor(str(r[c]))}">{html.escape(str(r[c]))}</a></td>')
            else:
                cells.append(f"<td>{html.escape(str(r[c]))}</td>")
        attrs = (f' data-notebook="{html.escape(str(r["notebook"]))}" data-verdict="{html.escape(str(r["verdict"]))}"'
                 f' data-paper="{html.escape(str(r["paper"]))}"')
        rows.append(f'<tr class="claim"{attrs} style="background:{VERDICT_BG.get(str(r["verdict"]), "")}">'
                    f'{"".join(cells)}</tr>')
    table_id = ' id="claims"' if filterable else ""
    return f"<table{table_id}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_SCRIPT = """
function applyFilter() {
  var nb = document.getElementById('f-notebook').value, v = document.getElementById('f-verdict').value;
  var p = document.getElementById('f-paper').value.toLowerCase(), shown = 0;
  document.querySelectorAll('#claims tr.claim').forEach(function (tr) {
    var ok = (!nb || tr.dataset.notebook === nb) && (!v || tr.dataset.verdict === v) &&
             (!p || tr.dataset.paper.toLowerCase().indexOf(p) >= 0);
    tr.style.display = ok ? '' : 'none';
    if (ok) shown++;
  });
  document.getElementById('f-count').textContent = shown + ' shown';
}
document.addEventListener('DOMContentLoaded', function () {
  ['f-notebook', 'f-verdict', 'f-paper'].forEach(function (id) {
    document.getElementById(id).addEventListener('input', applyFilter);
    document.getElementById(id).addEventListener('change', applyFilter);
  });
  applyFilter();
});
"""

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;font-size:12.5px;margin:1em 0}td,th{border:1px solid #ccc;"
          "padding:4px 6px;vertical-align:top}th{background:#eee;position:sticky;top:0}img{max-width:100%}"
          "figure{margin:1em 0;display:inline-block;max-width:48%;vertical-align:top}"
          "figcaption{font-size:12px;color:#555}.badge{color:#fff;border-radius:3px;padding:1px 6px;"
          "white-space:nowrap;font-size:12px}.counts td{font-size:14px;padding:4px 12px}"
          ".filters{margin:1em 0;font-size:13px}.filters label{margin-right:1em}nav li{margin:2px 0}")


def _render_html(run_dir: Path, manifest: dict[str, Any], nbs: list[dict[str, Any]], table: pd.DataFrame,
                 cols: list[str]) -> Path:
    e = html.escape
    counts = verdict_counts(table)
    verdicts = ("reproduced", "not reproduced", "inconclusive")
    count_rows = "".join(
        f'<tr><th>{e(k)}s</th>' + "".join(f'<td data-kind="{e(k)}" data-verdict="{e(v)}">{_badge(v)} '
                                          f'<b class="count">{c.get(v, 0)}</b></td>' for v in verdicts) + "</tr>"
        for k, c in counts.items())
    nb_opts = "".join(f'<option value="{e(m["notebook"])}">{e(m["notebook"])}</option>' for m in nbs)
    v_opts = "".join(f'<option value="{e(v)}">{e(v)}</option>' for v in verdicts)
    body = [f"<h1>attnlab report: {e(run_dir.name)}</h1>",
            f"<p>profile <b>{e(str(manifest.get('profile', '?')))}</b> &middot; commit "
            f"<code>{e(str(manifest.get('git_commit')))}</code></p>",
            '<h2 id="summary">Summary</h2>', f'<table class="counts">{count_rows}</table>',
            '<div class="filters"><label>notebook <select id="f-notebook"><option value="">all</option>'
            f'{nb_opts}</select></label><label>verdict <select id="f-verdict"><option value="">all</option>{v_opts}'
            '</select></label><label>paper <input id="f-paper" type="search" placeholder="e.g. Press"></label>'
            '<span id="f-count"></span></div>',
            _claims_html(table, cols, filterable=True),
            '<h2 id="contents">Contents</h2><nav><ol>'
            + "".join(f'<li><a href="#{_anchor(m["notebook"])}">{e(m["notebook"])}</a></li>' for m in nbs)
            + '<li><a href="#provenance">Provenance</a></li></ol></nav>']
    for m in nbs:
        name = m["notebook"]
        body.append(f'<section id="{_anchor(name)}"><h2>{e(name)}</h2><p>status <b>{e(str(m.get("status")))}</b>'
                    + (f", {m['duration_s']} s" if m.get("duration_s") else "")
                    + (f"<br><code>{e(str(m['error']))}</code>" if m.get("error") else "") + "</p>")
        for f in m.get("figures", []):
            p = run_dir / name / f
            if p.exists():
                data = base64.b64encode(p.read_bytes()).decode()
                body.append(f'<figure><img alt="{e(_caption(f))}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{e(name)}: {e(_caption(f))}</figcaption></figure>")
        body.append(_claims_html(table[table["notebook"] == name], [c for c in cols if c != "notebook"]))
        body.append("</section>")
    body.append('<h2 id="provenance">Provenance</h2><table>'
                + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _provenance(manifest, nbs))
                + "</table>")
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>attnlab {e(run_dir.name)}</title>"
           f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>{''.join(body)}</body></html>")
    return atomic_write_text(run_dir / "report.html", doc)
