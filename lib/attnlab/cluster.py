"""Notebooks as cluster jobs through submitit: SLURM, or submitit's local executor where there is none.

Each notebook is one job; a notebook with several ``seeds`` first runs one job per seed (a *shard*,
``--set seeds=[s]`` into ``shards/<notebook>/seed-<s>/``), which trains that seed's models into the
shared model cache, and then its own job with every seed, which reads them back -- so the run folder,
its claims and figures are those of a plain local run. Notebooks that read notebook 02's models start
after it. Shards and notebooks already completed with the same parameters are skipped (resumable);
a failed job is one line; the report is rendered when every job has ended.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from .config import Config, ConfigError
from .environment import cpu_cores
from .experiments import NEEDS
from .runner import Job, RunPlan, is_done, make_job, run_job

Executor = Literal["local", "slurm", "auto"]


class ClusterOptions(Config):
    """Where the jobs run: ``local`` (this process, no submitit), ``slurm``, or ``auto`` (SLURM where
    ``sbatch`` is found, else submitit's local executor); the rest are SLURM's resources per job."""

    executor: Executor = "local"
    partition: str | None = None
    gpus_per_job: int = Field(0, ge=0)
    cpus_per_job: int | None = Field(None, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    time_min: int = Field(240, ge=1, description="time limit of one job, minutes")
    array_parallelism: int = Field(8, ge=1, description="jobs running at once")
    shard_seeds: bool = Field(True, description="one job per seed before each notebook's own job")
    poll_s: float = Field(2.0, gt=0)

    def check(self) -> None:
        """Refuse ``slurm`` where there is no SLURM (before any job is submitted)."""
        if self.executor == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError("executor = 'slurm': no sbatch on this machine; valid choices: local, auto "
                              "(submitit's local executor where there is no SLURM), slurm (on a SLURM login node)")


@dataclass
class Node:
    """One job of the run: a notebook (``key`` = its name) or one seed's shard (``name/seed-s``)."""

    key: str
    job: Job
    needs: list[str] = field(default_factory=list)
    shard: bool = False


def nodes(p: RunPlan, todo: list[Job], opts: ClusterOptions, force: bool = False) -> list[Node]:
    """The jobs of a plan in dependency order: each notebook's seed shards, then the notebook."""
    names = {j.name for j in todo}
    out: list[Node] = []
    for j in todo:
        after = [d for d in NEEDS.get(j.name, ()) if d in names]
        seeds = j.resolved.get("seeds")
        shards = []
        if opts.shard_seeds and isinstance(seeds, (list, tuple)) and len(seeds) > 1:
            for s in seeds:
                overrides = dict(j.parameters["overrides"]) | {"seeds": [s]}
                job = make_job(j.name, p.profile, overrides, p.run_dir / "shards" / j.name / f"seed-{s}")
                if force or not is_done(job):
                    shards.append(Node(f"{j.name}/seed-{s}", job, list(after), shard=True))
        out += shards
        out.append(Node(j.name, j, after + [n.key for n in shards]))
    return out


def make_executor(folder: Path, opts: ClusterOptions) -> Any:
    """submitit's AutoExecutor with this run's resources."""
    import submitit

    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm" if opts.executor == "slurm" else None)
    params: dict[str, Any] = {"timeout_min": opts.time_min, "gpus_per_node": opts.gpus_per_job, "nodes": 1,
                              "tasks_per_node": 1, "slurm_array_parallelism": opts.array_parallelism}
    if opts.cpus_per_job:
        params["cpus_per_task"] = opts.cpus_per_job
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    if opts.partition:
        params["slurm_partition"] = opts.partition
    ex.update_parameters(**params)
    return ex


def _job_failure(key: str, job: Any, exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else type(exc).__name__
    state = getattr(job, "state", "FAILED")
    return f"{key}: job {job.job_id} {state}: {last}"


Batch = list[tuple[RunPlan, list[Job], Callable[[], Any]]]  # plans, their jobs to run, what to call on a result


def execute_jobs(batch: Batch, opts: ClusterOptions, *, force: bool, cell_timeout: int,
                 echo: Callable[[str], Any]) -> None:
    """Submit the jobs of one or more plans (a sweep's points) in waves of those whose needs have ended,
    wait, and record every result in its plan."""
    opts.check()
    graph: list[tuple[Node, RunPlan, Callable[[], Any]]] = []
    for p, todo, on_result in batch:
        prefix = f"{p.run_dir.name}:" if len(batch) > 1 else ""
        for n in nodes(p, todo, opts, force):
            n.key, n.needs = prefix + n.key, [prefix + d for d in n.needs]
            graph.append((n, p, on_result))
    if not graph:
        return
    ex = make_executor(batch[0][0].run_dir / "jobs" if len(batch) == 1 else batch[0][0].run_dir.parent / "jobs",
                       opts)
    cluster = ex.cluster
    threads = (max(1, cpu_cores() // min(opts.array_parallelism, len(graph))) if cluster != "slurm"
               else opts.cpus_per_job)
    shards = {n.key for n, _, _ in graph if n.shard}
    ended: dict[str, dict[str, Any]] = {}
    pending, running = list(graph), {}
    echo(f"executor {cluster}: {len(graph)} job(s), {len(shards)} of them seed shards; logs in {ex.folder}")
    while pending or running:
        for item in [it for it in pending if all(d in ended for d in it[0].needs)]:
            failed = [d for d in item[0].needs if ended[d]["status"] != "completed" and d not in shards]
            if failed:  # a failed shard does not stop its notebook, whose own job trains what is missing
                ended[item[0].key] = {"status": "failed", "duration_s": None,
                                      "error": f"{item[0].key}: not run: needs {', '.join(failed)}, which failed"}
                pending.remove(item)
                _record(*item, ended[item[0].key], echo)
        ready = [it for it in pending if all(d in ended for d in it[0].needs)]
        ready = ready[: max(0, opts.array_parallelism - len(running))]
        if ready:
            with ex.batch():  # one SLURM job array per wave
                submitted = [(it, ex.submit(run_job, it[0].job, threads, cell_timeout)) for it in ready]
            for it, job in submitted:
                pending.remove(it)
                running[it[0].key] = (it, job)
                echo(f"submit {it[0].key} (job {job.job_id})")
        for key, (it, job) in list(running.items()):
            if not job.done():
                continue
            try:
                r = job.result()
            except Exception as e:  # noqa: BLE001 -- a job killed, out of time or out of memory
                r = {"status": "failed", "error": _job_failure(key, job, e), "duration_s": None}
            r = dict(r) | {"job_id": str(job.job_id), "executor": cluster}
            ended[key] = r
            del running[key]
            _record(*it, r, echo)
        if running:
            time.sleep(opts.poll_s)


def submitter(opts: ClusterOptions) -> Callable[..., None] | None:
    """What `runner.execute` calls to run its jobs on `opts.executor` (None: in this process)."""
    if opts.executor == "local":
        return None

    def submit(batch: Batch, **kwargs: Any) -> None:
        execute_jobs(batch, opts, **kwargs)

    return submit


def _record(n: Node, p: RunPlan, on_result: Callable[[], Any], r: dict[str, Any],
            echo: Callable[[str], Any]) -> None:
    echo(f"{'shard' if n.shard else 'done '} {n.key}: {r['status']}" +
         (f" in {r['duration_s']} s" if r.get("duration_s") is not None else "") +
         (f": {r['error']}" if r.get("error") else ""))
    if not n.shard:
        p.results[n.job.name] = r
        on_result()
