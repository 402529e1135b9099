"""Inputs checked before any kernel starts (exit 2, one line); a failure that says why and keeps its rows."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from attnlab import session
from attnlab.errors import ConfigError


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "attnlab", "run", "--profile", "smoke", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("spec, needle", [
    ("file:/nonexistent/corpus.txt", "no such file or folder"),
    ("ftp:corpus", "unknown corpus; valid choices: stdlib, file:PATH, hf:NAME[/CONFIG]"),
    ("EMPTY", "the corpus is empty"),
    ("SMALL", "too few to split"),
    ("SHORT", "split has"),
])
def test_bad_corpus_stops_before_any_kernel(tmp_path, spec, needle):
    files = {"EMPTY": b"", "SMALL": b"abc", "SHORT": b"x = 1\n" * 50}
    if spec in files:
        f = tmp_path / "corpus.txt"
        f.write_bytes(files[spec])
        spec = f"file:{f}"
    out = tmp_path / "run"
    r = _run("--only", "02", "--out", str(out), "--set", f"data.corpus={spec}")
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x]
    assert len(lines) == 1 and needle in lines[0] and "data.corpus" in lines[0]
    assert not out.exists()  # nothing started


def test_hf_corpus_without_datasets_is_refused():
    try:
        import datasets  # noqa: F401
    except ImportError:
        from attnlab.config import validate
        from attnlab.data import DataConfig

        with pytest.raises(ConfigError, match="needs the `datasets` package"):
            validate(DataConfig, {"corpus": "hf:wikitext/wikitext-2-raw-v1"})
    else:
        pytest.skip("datasets is installed: the download path needs the network")


def test_every_model_failed_names_the_cause_and_keeps_the_rows(tmp_path):
    nb = session.start("02", "smoke", {}, str(tmp_path))
    rows = pd.DataFrame([{"experiment": "train", "encoding": e, "seed": 0, "status": "failed",
                          "error": "non-finite loss (nan) at step 4"} for e in ("alibi", "rope")])
    with pytest.raises(session.NotebookFailed, match=r"every model diverged \(2 of 2\): non-finite loss \(nan\) at step 4"):
        nb.finish(rows)
    import json

    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "failed" and len(m["results"]) == 2
    alibi = next(c for c in m["claims"] if c["id"] == "alibi_flat_to_16L")
    assert alibi["verdict"] == "inconclusive" and "training failed" in alibi["note"]


def test_some_models_failed_completes():
    rows = pd.DataFrame([{"status": "failed", "error": "non-finite loss (nan) at step 4"}, {"status": "completed"}])
    assert session.all_failed(rows) == ""
    assert "every model failed" in session.all_failed(pd.DataFrame([{"status": "failed", "error": "boom"}]))
