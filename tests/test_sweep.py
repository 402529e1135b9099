"""Sweeps: a grid over --set keys into one folder with one combined report; bad specs are one line, exit 2."""

import csv

import nbformat
import pytest
from pydantic import Field

from attnlab import config as C
from attnlab import sweep
from attnlab.cli import main
from attnlab.cluster import ClusterOptions, submitter
from attnlab.experiments import NOTEBOOKS

NB = "92_sweep_probe"


class _Probe(C.Config):
    """Test notebook whose claim's estimate is its parameters' product."""

    seed: int = Field(0, ge=0)
    lr: float = Field(1e-3, gt=0)


@pytest.fixture(autouse=True)
def _notebook(tmp_path, monkeypatch):
    NOTEBOOKS.register(NB)(_Probe)
    d = tmp_path / "notebooks"
    d.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('profile = "auto"\noverrides = {}\nout_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import json, pathlib\n"
        "o = {'seed': 0, 'lr': 1e-3} | overrides\n"
        "json.dump({'notebook': '" + NB + "', 'status': 'completed', 'claims': [{'id': 'probe', 'paper': 'P', "
        "'statement': 's', 'paper_value': '1', 'measured': 'm', 'threshold': 't', 'estimate': o['seed'] * o['lr'], "
        "'ci_low': 0, 'ci_high': 1, 'n_seeds': 1, 'verdict': 'reproduced'}]}, "
        "open(pathlib.Path(out_dir) / 'metrics.json', 'w'))")]
    nbformat.write(nb, d / f"{NB}.ipynb")
    monkeypatch.setenv("ATTNLAB_NOTEBOOKS", str(d))
    yield
    NOTEBOOKS.unregister(NB)


def _spec(tmp_path, text):
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


GRID = f"notebooks: [{NB}]\nprofile: smoke\nset: {{lr: 2E-3}}\ngrid:\n  seed: [1, 2]\n  lr: [1e-3, 2.5e+0]\n"


def test_grid_runs_every_point_into_one_report(tmp_path):
    spec = sweep.load_spec(_spec(tmp_path, GRID))
    assert spec.grid["lr"] == [1e-3, 2.5] and spec.set["lr"] == 2e-3  # numbers in any notation
    folder, plans = sweep.plan(spec, tmp_path / "sw")
    table = sweep.execute(folder, plans, spec, echo=lambda *_: None)
    assert len(plans) == 4 and len(table) == 4
    rows = list(csv.DictReader(open(folder / "claims.csv")))
    got = {(r["seed"], r["lr"]): float(r["estimate"]) for r in rows}
    assert got == {("1", "0.001"): 0.001, ("1", "2.5"): 2.5, ("2", "0.001"): 0.002, ("2", "2.5"): 5.0}
    md = (folder / "sweep.md").read_text()
    assert "| seed | lr | notebook | id |" in md and "Verdicts per point" in md
    assert all((p.run_dir / "report.html").exists() for _, p in plans)
    assert (folder / "sweep.json").exists()


def test_sweep_points_as_submitit_jobs(tmp_path):
    spec = sweep.load_spec(_spec(tmp_path, f"notebooks: [{NB}]\nprofile: smoke\ngrid: {{lr: [1e-3, 3e-3]}}\n"))
    folder, plans = sweep.plan(spec, tmp_path / "sw")
    said = []
    table = sweep.execute(folder, plans, spec, submit=submitter(ClusterOptions(executor="auto", poll_s=0.2)),
                          echo=said.append)
    assert sorted(table["estimate"]) == [0.0, 0.0] and len(table) == 2
    assert sum(s.startswith("submit ") for s in said) == 2 and (folder / "jobs").is_dir()  # both points at once


@pytest.mark.parametrize("text, message", [
    ("notebooks: [92]\ngrids: {seed: [1]}\n", "grids: unknown parameter; valid choices: grid, notebooks, out"),
    (f"notebooks: [{NB}]\ngrid: {{seed: []}}\n", "grid.seed: needs at least one value"),
    (f"notebooks: [{NB}]\ngrid: {{seeds: [[0], [1]]}}\n", "grid.seeds: seeds are not a grid axis"),
    (f"notebooks: [{NB}]\ngrid: {{sed: [1, 2]}}\n", "--set sed: unknown parameter"),
    (f"notebooks: [{NB}]\ngrid: {{seed: [-1]}}\n", "seed = -1"),
    (f"notebooks: [{NB}]\nprofile: fast\ngrid: {{seed: [1]}}\n", "profile"),
    ("notebooks: [42]\ngrid: {seed: [1]}\n", "42"),
    ("[1, 2\n", "not YAML"),
])
def test_bad_spec_is_one_line_exit_2_before_any_job(tmp_path, capsys, text, message):
    out = tmp_path / "never"
    assert main(["sweep", str(_spec(tmp_path, text)), "--out", str(out), "--executor", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_missing_spec_file(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
