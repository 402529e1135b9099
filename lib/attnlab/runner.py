"""Execute notebooks with papermill into a resumable run folder.

Everything is validated before the first notebook starts. A notebook already completed in the
run folder with identical resolved parameters is skipped; one failing notebook never loses
the others' results; each failure is summarised in one line (notebook, cell, error).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config as C
from .environment import collect, cpu_cores, git_commit, uncommitted
from .experiments import NOTEBOOKS, preflight, resolve_notebook
from .experiments import load as load_config
from .io import atomic_write_json, read_json
from .session import project_root


@dataclass(frozen=True)
class Job:
    """One notebook to execute: where from, where to, with which parameters."""

    name: str
    source: Path
    out_dir: Path
    parameters: dict[str, Any]
    resolved: dict[str, Any]
    digest: str


@dataclass
class RunPlan:
    """A validated run: profile, folder and the jobs (in notebook order)."""

    profile: str
    requested_profile: str
    run_dir: Path
    jobs: list[Job]
    overrides: dict[str, Any]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def split_overrides(names: list[str], overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Give each notebook the --set keys it knows; a key no selected notebook knows is an error."""
    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    known = {n: set(C.known_keys(NOTEBOOKS.get(n))) for n in names}
    for key, value in overrides.items():  # a component's parameters (model.attention.window) count as known, and
        # so does a whole group (model={d_model: 64}; notebook 08 reads model=hf:NAME as its transformers model)
        hits = [n for n in names if any(key == k or key.startswith(k + ".") or k.startswith(key + ".")
                                        for k in known[n])]
        if not hits:
            valid = sorted(set().union(*known.values()))
            raise C.ConfigError(f"--set {key}: unknown parameter for {', '.join(names)}; valid choices: "
                                f"{', '.join(valid)}")
        for n in hits:
            per[n][key] = value
    return per


def default_run_dir(profile: str) -> Path:
    """outputs/run-<profile>-<short commit>[-dirty]: rerunning on the same commit resumes that folder."""
    commit = git_commit() or "nogit"
    return project_root() / "outputs" / f"run-{profile}-{commit[:7]}{'-dirty' if commit.endswith('-dirty') else ''}"


def check_reference_tree(run_dir: Path) -> None:
    """A reference run (under outputs/reference/) must name a real commit: refuse a tree whose code (lib/,
    notebooks/, package metadata, lock) has uncommitted changes."""
    ref = (project_root() / "outputs" / "reference").resolve()
    if run_dir.resolve() != ref and ref not in run_dir.resolve().parents:
        return
    changed = uncommitted()
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise C.ConfigError(f"out = {run_dir}: a reference run needs lib/, notebooks/ and the lock committed; "
                            f"uncommitted: {shown}")


def plan(profile: str = "auto", only: list[str] | None = None, out: str | Path | None = None,
         overrides: dict[str, Any] | None = None) -> RunPlan:
    """Validate profile, notebooks and overrides, and lay out the run (no notebook is executed)."""
    requested = profile
    profile = C.resolve_profile(profile)
    names = [resolve_notebook(n) for n in only] if only else NOTEBOOKS.names()
    names = list(dict.fromkeys(names))
    missing = [n for n in names if not (C.notebooks_dir() / f"{n}.ipynb").exists()]
    if missing:
        raise C.ConfigError(f"notebook = {missing[0]!r}: no file {missing[0]}.ipynb in {C.notebooks_dir()}")
    overrides = dict(overrides or {})
    per = split_overrides(names, overrides)
    run_dir = Path(out).resolve() if out else default_run_dir(profile)
    check_reference_tree(run_dir)
    jobs = [make_job(n, profile, per[n], run_dir / n, check_inputs=True) for n in names]
    return RunPlan(profile, requested, run_dir, jobs, overrides)


def make_job(name: str, profile: str, overrides: dict[str, Any], out_dir: Path, check_inputs: bool = False) -> Job:
    """One notebook's job: its config resolved and validated (ConfigError before any work), and its digest."""
    cfg = load_config(name, profile, overrides)
    if check_inputs:
        preflight(name, cfg, profile)  # inputs that must load (a corpus), before any kernel starts
    resolved = C.to_dict(cfg)
    digest = hashlib.sha256(json.dumps([profile, resolved], sort_keys=True).encode()).hexdigest()[:16]
    params = {"profile": profile, "overrides": overrides, "out_dir": str(out_dir)}
    return Job(name, C.notebooks_dir() / f"{name}.ipynb", out_dir, params, resolved, digest)


def run_job(job: Job, threads: int | None, cell_timeout: int) -> dict[str, Any]:
    """One notebook as a job of its own process (a cluster executor's unit): its kernelspec made here."""
    if threads is None:
        threads = cpu_cores()
    kernel_dir = _kernel_dir()
    try:
        return execute_job(job, str(kernel_dir), threads, False, cell_timeout)
    finally:
        shutil.rmtree(kernel_dir, ignore_errors=True)


def is_done(job: Job) -> bool:
    """Completed earlier in this run folder with identical resolved parameters."""
    status = job.out_dir / "status.json"
    if not status.exists():
        return False
    try:
        s = read_json(status)
    except (OSError, ValueError):
        return False
    return s.get("status") == "completed" and s.get("digest") == job.digest and \
        (job.out_dir / "metrics.json").exists()


def _kernel_dir() -> Path:
    """A kernelspec for the interpreter running attnlab, so notebooks run in this environment."""
    root = Path(tempfile.mkdtemp(prefix="attnlab-kernel-"))
    spec = root / "kernels" / "attnlab-run"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "attnlab (this environment)", "language": "python"}))
    return root


def _failure_line(name: str, exc: BaseException) -> str:
    cell = getattr(exc, "exec_count", None) or getattr(exc, "cell_index", None)
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        first = str(evalue).strip().splitlines()[0] if evalue else ""
        return f"{name}: cell {cell}: {ename}: {first}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{name}: {type(exc).__name__}: {first}"


def execute_job(job: Job, kernel_dir: str, threads: int, progress: bool, cell_timeout: int) -> dict[str, Any]:
    """Run one notebook with papermill (in this process); never raises, returns its status."""
    import papermill as pm

    os.environ["JUPYTER_PATH"] = kernel_dir + os.pathsep + os.environ.get("JUPYTER_PATH", "")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    job.out_dir.mkdir(parents=True, exist_ok=True)
    (job.out_dir / "metrics.json").unlink(missing_ok=True)
    t0 = time.time()
    started = now()
    commit = git_commit()  # the code this notebook ran (a resumed run folder may hold several)
    status, error = "completed", None
    try:
        pm.execute_notebook(str(job.source), str(job.out_dir / f"{job.name}.ipynb"), parameters=job.parameters,
                            kernel_name="attnlab-run", cwd=str(job.out_dir), progress_bar=progress,
                            execution_timeout=cell_timeout, log_output=False, report_mode=False)
    except BaseException as e:  # noqa: BLE001 -- one failing notebook never stops the others
        status, error = "failed", _failure_line(job.name, e)
    metrics_path = job.out_dir / "metrics.json"
    if status == "completed" and not metrics_path.exists():
        status, error = "failed", f"{job.name}: finished without writing metrics.json"
    if status == "failed" and metrics_path.exists():  # written by nb.finish: keep its rows and claims
        m = read_json(metrics_path)
        m["status"] = "failed"
        m["error"] = m.get("error") or error
        atomic_write_json(metrics_path, m)
        error = m["error"]
    elif status == "failed":
        atomic_write_json(metrics_path, {"notebook": job.name, "profile": job.parameters["profile"],
                                         "parameters": job.resolved, "status": "failed", "error": error,
                                         "results": [], "claims": [], "figures": [], "duration_s": None})
    result = {"status": status, "error": error, "started": started, "ended": now(),
              "duration_s": round(time.time() - t0, 1), "digest": job.digest, "git_commit": commit}
    atomic_write_json(job.out_dir / "status.json", result)
    return result


def _seeds(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if k == "seed" or k == "seeds":
                out[key] = v
            out.update(_seeds(v, key + "."))
    return out


def write_manifest(p: RunPlan, started: str, ended: str | None) -> None:
    manifest_path = p.run_dir / "manifest.json"
    old = read_json(manifest_path) if manifest_path.exists() else {}
    notebooks = dict(old.get("notebooks", {}))
    for j in p.jobs:
        entry = dict(notebooks.get(j.name, {}))
        entry.update(parameters=j.resolved, overrides=j.parameters["overrides"], digest=j.digest,
                     seeds=_seeds(j.resolved))
        entry.update(p.results.get(j.name, {}))
        notebooks[j.name] = entry
    atomic_write_json(manifest_path, {
        "run_id": p.run_dir.name, "profile": p.profile, "requested_profile": p.requested_profile,
        "overrides": p.overrides, "git_commit": git_commit(), "environment": collect(),
        "started": old.get("started", started), "ended": ended, "notebooks": notebooks})


def _link_latest(run_dir: Path) -> None:
    outputs = project_root() / "outputs"
    if run_dir.parent != outputs:
        return
    link = outputs / "latest"
    tmp = outputs / ".latest.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


def execute(p: RunPlan, jobs: int = 1, force: bool = False, cell_timeout: int = 4 * 3600,
            echo: Any = print, submit: Any = None) -> RunPlan:
    """Execute a plan (skipping completed notebooks unless `force`), then write manifest and report; with
    `submit` (``cluster.submitter``) each notebook and seed shard is a job of a cluster executor."""
    started, todo = start(p, force, echo)
    if submit is not None:
        submit([(p, todo, lambda: write_manifest(p, started, None))], force=force, cell_timeout=cell_timeout,
               echo=echo)
        return finish(p, started)
    jobs = max(1, min(jobs, len(todo) or 1))
    threads = max(1, cpu_cores() // jobs)
    kernel_dir = _kernel_dir()
    try:
        if jobs == 1:
            for i, j in enumerate(todo, 1):
                echo(f"[{i}/{len(todo)}] run {j.name} (profile {p.profile})")
                r = execute_job(j, str(kernel_dir), threads, True, cell_timeout)
                p.results[j.name] = r
                echo(f"      {r['status']} in {r['duration_s']} s" + (f": {r['error']}" if r["error"] else ""))
                write_manifest(p, started, None)
        else:
            ctx = mp.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futs = {pool.submit(execute_job, j, str(kernel_dir), threads, False, cell_timeout): j for j in todo}
                for j in todo:
                    echo(f"start {j.name} (profile {p.profile}, {threads} threads)")
                for k, fut in enumerate(cf.as_completed(futs), 1):
                    j = futs[fut]
                    try:
                        r = fut.result()
                    except BaseException as e:  # noqa: BLE001
                        r = {"status": "failed", "error": _failure_line(j.name, e), "duration_s": None}
                    p.results[j.name] = r
                    echo(f"[{k}/{len(todo)}] {j.name}: {r['status']} in {r['duration_s']} s"
                         + (f": {r['error']}" if r["error"] else ""))
                    write_manifest(p, started, None)
    finally:
        shutil.rmtree(kernel_dir, ignore_errors=True)
    return finish(p, started)


def start(p: RunPlan, force: bool = False, echo: Any = print) -> tuple[str, list[Job]]:
    """Open the run folder (manifest written) and find the jobs still to run; completed ones are skipped."""
    p.run_dir.mkdir(parents=True, exist_ok=True)
    started = now()
    write_manifest(p, started, None)
    todo = []
    for j in p.jobs:
        if not force and is_done(j):
            echo(f"skip  {j.name} (completed in this run folder with the same parameters; --force reruns)")
            p.results[j.name] = read_json(j.out_dir / "status.json") | {"skipped": True}
        else:
            todo.append(j)
    return started, todo


def finish(p: RunPlan, started: str) -> RunPlan:
    """The final manifest and the report of a run folder."""
    from .report import render

    write_manifest(p, started, now())
    render(p.run_dir)
    _link_latest(p.run_dir)
    return p


def failures(p: RunPlan) -> list[str]:
    return [r["error"] or f"{n}: failed" for n, r in p.results.items() if r.get("status") != "completed"]
