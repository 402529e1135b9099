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


def _fake_run(root, verdict: str, bpb: float):
    import json

    d = root / "02_lm_length_extrapolation"
    d.mkdir(parents=True)
    results = [{"experiment": "eval", "protocol": "nonoverlapping", "encoding": "alibi", "seed": s, "length": n,
                "bpb": bpb + 0.01 * s} for s in range(3) for n in (64, 128)]
    claims = [{"id": "alibi_flat_to_16L", "kind": "reproduction", "paper": "Press", "verdict": verdict,
               "estimate": 1.0, "ci_low": 0.99, "ci_high": 1.01, "n_seeds": 3},
              {"id": "t5_holds_to_2L", "kind": "reproduction", "paper": "Press", "verdict": "inconclusive",
               "estimate": 1.0, "ci_low": 0.9, "ci_high": 1.1, "n_seeds": 3}]
    (d / "metrics.json").write_text(json.dumps({"notebook": d.name, "status": "completed", "results": results,
                                                "claims": claims}))
    return root


def test_compare_two_runs(tmp_path):
    from attnlab import cli

    a = _fake_run(tmp_path / "a", "reproduced", 2.5)
    b = _fake_run(tmp_path / "b", "not reproduced", 2.7)
    assert cli.main(["compare", str(a), str(b)]) == 0
    page = (b / "compare.html").read_text()
    assert "1</b> of 2 verdicts changed" in page and page.count("data:image/png;base64,") == 1
    assert cli.main(["compare", str(a), str(tmp_path / "nope")]) == 2


@pytest.mark.parametrize("notebook, key", [("02", "seeds"), ("03", "seeds"), ("05", "seeds"), ("07", "cc_seeds")])
@pytest.mark.parametrize("value, needle", [([0, 0], "seeds must be distinct"), ([-1], "must be >= 0"),
                                           ([], "at least 1 item")])
def test_seeds_are_checked_when_the_config_is_built(notebook, key, value, needle):
    from attnlab.experiments import load

    with pytest.raises(ConfigError, match=needle):
        load(notebook, "smoke", {key: value})
