"""Runner: failure reporting in one line, other notebooks kept, resumption, report contents."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from pydantic import Field

from attnlab import config as C
from attnlab import runner
from attnlab.experiments import NOTEBOOKS

GOOD, BAD = "90_runner_good", "91_runner_bad"


class _Good(C.Config):
    """Test notebook that writes metrics.json."""

    seed: int = Field(0, ge=0)


class _Bad(C.Config):
    """Test notebook whose second cell fails."""

    seed: int = Field(0, ge=0)


@pytest.fixture(autouse=True, scope="module")
def _test_notebooks_registered():
    NOTEBOOKS.register(GOOD)(_Good)
    NOTEBOOKS.register(BAD)(_Bad)
    yield
    NOTEBOOKS.unregister(GOOD)
    NOTEBOOKS.unregister(BAD)


def _write(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('profile = "auto"\noverrides = {}\nout_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    d = tmp_path / "notebooks"
    d.mkdir()
    _write(d / f"{GOOD}.ipynb", [
        "import json, pathlib\n"
        "p = pathlib.Path(out_dir)\n"
        "n = len(list(p.glob('ran*')))\n"
        "(p / f'ran{n}').write_text('x')\n"
        "json.dump({'notebook': '" + GOOD + "', 'status': 'completed', 'claims': [{'id': 'c1', 'paper': 'P',"
        " 'statement': 's', 'paper_value': '1', 'measured': '1', 'threshold': 't', 'verdict': 'reproduced'}]},"
        " open(p / 'metrics.json', 'w'))"])
    _write(d / f"{BAD}.ipynb", ["x = 1", "raise ValueError('boom: the second cell fails')"])
    monkeypatch.setenv("ATTNLAB_NOTEBOOKS", str(d))
    return d


def test_failure_is_one_line_and_others_survive_then_resume(nbdir, tmp_path):
    out = tmp_path / "run"
    p = runner.execute(runner.plan("smoke", [GOOD, BAD], out), echo=lambda *_: None)
    fails = runner.failures(p)
    assert len(fails) == 1
    assert fails[0].startswith(f"{BAD}: cell ") and "ValueError: boom: the second cell fails" in fails[0]
    assert "\n" not in fails[0]
    assert json.loads((out / GOOD / "metrics.json").read_text())["status"] == "completed"
    bad = json.loads((out / BAD / "metrics.json").read_text())
    assert bad["status"] == "failed" and "boom" in bad["error"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["notebooks"][GOOD]["status"] == "completed"
    assert manifest["notebooks"][BAD]["status"] == "failed"
    assert manifest["ended"] and manifest["profile"] == "smoke" and manifest["environment"]["packages"]["torch"]
    assert "c1" in (out / "claims.csv").read_text()
    html = (out / "report.html").read_text()
    assert "boom" in html and "reproduced" in html
    assert len(list((out / GOOD).glob("ran*"))) == 1

    # resume: the completed notebook is skipped, the failed one is retried
    messages = []
    runner.execute(runner.plan("smoke", [GOOD, BAD], out), echo=messages.append)
    assert any(m.startswith(f"skip  {GOOD}") for m in messages)
    assert len(list((out / GOOD).glob("ran*"))) == 1

    # changed parameters or --force rerun it
    runner.execute(runner.plan("smoke", [GOOD], out, {"seed": 3}), echo=lambda *_: None)
    assert len(list((out / GOOD).glob("ran*"))) == 2
    runner.execute(runner.plan("smoke", [GOOD], out, {"seed": 3}), force=True, echo=lambda *_: None)
    assert len(list((out / GOOD).glob("ran*"))) == 3


def test_parallel_jobs(nbdir, tmp_path):
    out = tmp_path / "run"
    p = runner.execute(runner.plan("smoke", [GOOD, BAD], out), jobs=2, echo=lambda *_: None)
    assert p.results[GOOD]["status"] == "completed" and p.results[BAD]["status"] == "failed"


def test_overrides_go_to_the_notebooks_that_know_them(nbdir, tmp_path):
    real = Path(__file__).resolve().parents[1] / "notebooks"
    shutil.copy(real / "01_positional_encodings.ipynb", nbdir)
    shutil.copytree(real / "presets", nbdir / "presets")
    p = runner.plan("smoke", [GOOD, "01"], tmp_path / "r", {"seed": 5, "max_distance": 64})
    params = {j.name: j.parameters["overrides"] for j in p.jobs}
    assert params[GOOD] == {"seed": 5}
    assert params["01_positional_encodings"] == {"seed": 5, "max_distance": 64}


def test_threads_per_notebook_respect_a_callers_openmp_limit(monkeypatch):
    """OMP_NUM_THREADS, where set, caps the threads a run gives each notebook kernel (never above the cores)."""
    import os

    from attnlab.environment import cpu_cores

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_cores() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores + 8))
    assert cpu_cores() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert cpu_cores() == cores
