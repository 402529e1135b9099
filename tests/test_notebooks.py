"""Notebooks: stored without outputs, thin, and every one runs end to end at profile smoke."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_parameterized(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    src = params[0].source
    assert 'profile = "auto"' in src and "overrides = {}" in src and 'out_dir = ""' in src
    assert "def " not in "".join(c.source for c in code), "reusable code belongs in lib/attnlab"


@pytest.mark.slow
def test_smoke_run_of_every_notebook(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "attnlab", "run", "--profile", "smoke", "--out", str(out)],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    for nb in NOTEBOOKS:
        d = out / nb.stem
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        assert {"notebook", "profile", "parameters", "results", "claims", "duration_s", "environment"} <= set(metrics)
        assert metrics["duration_s"] < 90, f"{nb.stem} smoke profile took {metrics['duration_s']} s"
        assert metrics["results"] and metrics["claims"]
        for c in metrics["claims"]:
            assert c["verdict"] in ("reproduced", "not reproduced", "inconclusive")
            assert {"id", "paper", "statement", "paper_value", "measured", "threshold"} <= set(c)
        assert list(d.glob("*.png")) and (d / f"{nb.stem}.ipynb").exists()
        assert manifest["notebooks"][nb.stem]["status"] == "completed"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "src=\"http" not in html
    assert (out / "claims.csv").read_text().count("\n") > 1
    assert (out / "report.md").exists()
