"""Notebooks as submitit jobs (its local executor on this machine): same results as a plain local run."""

import json
import math
import os
import subprocess
import sys

import pytest

from attnlab import runner
from attnlab.cli import main
from attnlab.cluster import ClusterOptions, _job_failure, nodes

NB = ["02_lm_length_extrapolation"]  # sharded by seed, then merged: both kinds of job
TIMING = ("speed", "speed_round")  # wall-clock measurements differ between any two runs


def _run(out, cache, *extra):
    env = {**os.environ, "ATTNLAB_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "attnlab", "run", "--profile", "smoke", "--only", *NB, "--out",
                           str(out), "--set", "encodings=[alibi, rope]", *extra],  # two of 02's ten, for time
                          capture_output=True, text=True, env=env, timeout=900)


def _measured(run_dir, nb):
    rows = json.loads((run_dir / nb / "metrics.json").read_text())["results"]
    return [{k: v for k, v in r.items() if k not in ("step_time_s", "tokens_per_s", "wall_s", "status")}
            for r in rows if r.get("experiment") not in TIMING]


def _close(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6)
    return a == b


@pytest.mark.slow
def test_submitit_jobs_equal_a_plain_run(tmp_path):
    jobs, plain = tmp_path / "jobs", tmp_path / "plain"
    r = _run(jobs, tmp_path / "cache-jobs", "--executor", "auto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "executor local: 3 job(s), 2 of them seed shards" in r.stdout  # 02 as seed 0, seed 1, then all
    manifest = json.loads((jobs / "manifest.json").read_text())
    assert manifest["notebooks"][NB[0]]["job_id"] and manifest["notebooks"][NB[0]]["executor"] == "local"
    assert sorted(p.name for p in (jobs / "shards" / NB[0]).iterdir()) == ["seed-0", "seed-1"]
    trained = [x for x in json.loads((jobs / NB[0] / "metrics.json").read_text())["results"]
               if x["experiment"] == "train"]
    assert trained and all(x["status"] == "cached" for x in trained)  # the shards trained them
    assert (jobs / "report.html").exists() and (jobs / "claims.csv").exists()

    r = _run(plain, tmp_path / "cache-plain")
    assert r.returncode == 0, r.stderr[-3000:]
    for nb in NB:
        a, b = _measured(jobs, nb), _measured(plain, nb)
        assert len(a) == len(b) and a, nb
        for x, y in zip(a, b):
            assert x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x), (nb, x, y)
        va = {c["id"]: c["verdict"] for c in json.loads((jobs / nb / "metrics.json").read_text())["claims"]}
        vb = {c["id"]: c["verdict"] for c in json.loads((plain / nb / "metrics.json").read_text())["claims"]}
        va.pop("speed_ordering", None), vb.pop("speed_ordering", None)
        assert va == vb, nb

    again = _run(jobs, tmp_path / "cache-jobs", "--executor", "auto")  # resumable: nothing is submitted
    lines = again.stdout.splitlines()
    assert again.returncode == 0 and not any(ln.startswith("submit") for ln in lines), again.stdout
    assert sum(ln.startswith("skip ") for ln in lines) == 1


def test_shards_come_first_and_dependents_wait(tmp_path):
    p = runner.plan("smoke", ["02", "06", "01"], tmp_path / "r")
    graph = nodes(p, p.jobs, ClusterOptions(executor="auto"))
    keys = [n.key for n in graph]
    assert keys[:3] == ["02_lm_length_extrapolation/seed-0", "02_lm_length_extrapolation/seed-1",
                        "02_lm_length_extrapolation"]
    six = [n for n in graph if n.key.startswith("06")]
    assert six and all("02_lm_length_extrapolation" in n.needs for n in six)  # 06 reads 02's models
    assert graph[2].needs == keys[:2]
    flat = nodes(p, p.jobs, ClusterOptions(executor="auto", shard_seeds=False))
    assert not any(n.shard for n in flat)


def test_slurm_without_sbatch_is_one_line_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["run", "--profile", "smoke", "--only", "01", "--executor", "slurm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "executor = 'slurm': no sbatch" in err[0] and "valid choices: local, auto" in err[0]


@pytest.mark.parametrize("args, field", [(["--executor", "pbs"], "executor = 'pbs'"),
                                         (["--array-parallelism", "0"], "array_parallelism = 0")])
def test_bad_executor_options_exit_2(args, field, capsys):
    assert main(["run", "--profile", "smoke", "--only", "01", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0], err


def test_a_failed_job_is_one_line():
    class Job:
        job_id, state = "123_4", "TIMEOUT"

    exc = RuntimeError("Job 123_4 (task: 0) with path /x\nhas not produced any output (state: TIMEOUT)\n"
                       "Error stream:\nslurmstepd: error: *** JOB 123 CANCELLED DUE TO TIME LIMIT ***\n")
    line = _job_failure("02_lm_length_extrapolation/seed-1", Job(), exc)
    assert "\n" not in line and line.startswith("02_lm_length_extrapolation/seed-1: job 123_4 TIMEOUT: ")
    assert "TIME LIMIT" in line
