"""The `attnlab` command: run notebooks, list them, render reports, benchmark."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import config as C
from .errors import ConfigError


def _cmd_run(a: argparse.Namespace) -> int:
    from . import runner
    from .cluster import submitter

    overrides = C.parse_overrides(a.set or [])
    _positive(a, "jobs", "cell_timeout")
    opts = _cluster_options(a)
    p = runner.plan(a.profile, a.only, a.out, overrides)  # validates everything first
    opts.check()
    print(f"run folder: {p.run_dir} (profile {p.profile}; {len(p.jobs)} notebook(s))")
    runner.execute(p, jobs=a.jobs, force=a.force, cell_timeout=a.cell_timeout, submit=submitter(opts))
    fails = runner.failures(p)
    print(f"report: {p.run_dir / 'report.html'}  (also report.md, claims.csv)")
    for f in fails:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if fails else 0


def _cluster_options(a: argparse.Namespace) -> object:
    from .cluster import ClusterOptions

    fields = {k: getattr(a, k) for k in ("executor", "partition", "gpus_per_job", "cpus_per_job", "mem_gb",
                                         "time_min", "array_parallelism") if getattr(a, k, None) is not None}
    return C.validate(ClusterOptions, fields, "--executor options")


def _cluster_arguments(r: argparse.ArgumentParser) -> None:
    g = r.add_argument_group("cluster (submitit)")
    g.add_argument("--executor", default="local", help="local (default: this process) | slurm | auto "
                   "(SLURM where sbatch is found, else submitit's local executor): each notebook and each seed "
                   "shard one job")
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--gpus-per-job", type=int, help="GPUs per job (default 0)")
    g.add_argument("--cpus-per-job", type=int, help="CPUs per job")
    g.add_argument("--mem-gb", type=float, help="memory per job, GB")
    g.add_argument("--time-min", type=int, help="time limit per job, minutes (default 240)")
    g.add_argument("--array-parallelism", type=int, help="jobs running at once (default 8)")


def _cmd_sweep(a: argparse.Namespace) -> int:
    from . import sweep
    from .cluster import submitter
    from .runner import failures

    _positive(a, "jobs", "cell_timeout")
    opts = _cluster_options(a)
    spec = sweep.load_spec(a.spec)
    folder, plans = sweep.plan(spec, a.out)  # every point validated before any job
    opts.check()
    print(f"sweep folder: {folder} ({len(plans)} point(s) x {len(spec.notebooks)} notebook(s), profile "
          f"{plans[0][1].profile})")
    sweep.execute(folder, plans, spec, jobs=a.jobs, force=a.force, cell_timeout=a.cell_timeout,
                  submit=submitter(opts))
    fails = [f for _, p in plans for f in failures(p)]
    print(f"sweep report: {folder / 'sweep.md'}  (also claims.csv; each point's report.html in its folder)")
    for f in fails:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if fails else 0


def _lookup(tree: object, key: str) -> object:
    for part in key.split("."):
        tree = tree.get(part, {}) if isinstance(tree, dict) else {}
    return tree


def _cmd_list(a: argparse.Namespace) -> int:
    from .experiments import NOTEBOOKS

    for name in NOTEBOOKS.names():
        cls = NOTEBOOKS.get(name)
        presets = C.load_presets(name)
        print(f"{name}  ({(cls.__doc__ or '').strip().splitlines()[0]})")
        defaults = C.to_dict(cls())
        for key in C.known_keys(cls):
            per = [f"{prof}={v}" for prof in C.PROFILES if (v := _lookup(C.nest(presets[prof]), key)) != {}]
            print(f"    {key} = {_lookup(defaults, key)}" + (f"   [{', '.join(per)}]" if per else ""))
    from .attention import ATTENTION
    from .positional import ENCODINGS

    for title, registry in (("positional encodings (pe, encodings: a name or {name: ..., parameter: value})",
                             ENCODINGS),
                            ("attention (model.attention, variants: a name or {name: ..., parameter: value})",
                             ATTENTION)):
        print(title)
        for name, cls in registry.items():
            params = ", ".join(f"{k}={v}" for k, v in C.to_dict(cls.Params()).items())
            doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())  # its summary, one line
            doc = doc if len(doc) <= 110 else doc[:109].rsplit(" ", 1)[0] + " ..."
            print(f"    {name}({params})  {doc}" if params else f"    {name}  {doc}")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from .report import render

    print(f"report: {render(Path(a.dir))}")
    return 0


def _cmd_compare(a: argparse.Namespace) -> int:
    from .compare import compare, terminal_table

    table, page = compare(a.run_a, a.run_b, a.out)
    print(f"{int(table['changed'].sum())} of {len(table)} verdicts changed")
    print(terminal_table(table, a.all))
    print(f"compare: {page}")
    return 0


def _positive(a: argparse.Namespace, *names: str) -> None:
    for k in names:
        if getattr(a, k) < 1:
            raise ConfigError(f"--{k.replace('_', '-')} = {getattr(a, k)}: must be >= 1")


def _bench_train(a: argparse.Namespace) -> tuple[str, object]:
    from .bench.train import bench_train, format_train

    r = bench_train(size=a.size, batch=a.batch, seq=a.seq, rounds=a.rounds, steps_per_round=a.steps_per_round,
                    compile=a.compile)
    return format_train(r), r


def _bench_ablate(a: argparse.Namespace) -> tuple[str, object]:
    from .bench.train import bench_ablation, format_ablation

    r = bench_ablation(a.size, a.batch, a.seq, a.rounds, a.steps_per_round, compile=a.compile)
    return format_ablation(r), r


def _bench_attention(a: argparse.Namespace) -> tuple[str, object]:
    from .attention import ATTENTION
    from .bench.attention import BIAS_BACKENDS, bench_attention, scaling_exponents

    if any(n < 2 for n in a.lengths):
        raise ConfigError(f"--lengths = {a.lengths}: every length must be >= 2")
    variants = [C.parse_overrides([f"v={v}"])["v"] for v in a.variants] if a.variants else ATTENTION.names()
    bias = BIAS_BACKENDS if a.bias_backends is None else a.bias_backends
    df = bench_attention(variants, tuple(a.lengths), a.batch, a.heads, a.head_dim, a.causal, repeats=a.repeats,
                         bias_backends=bias)
    ex = scaling_exponents(df)
    table = df.pivot_table(index="variant", columns=["mode", "length"], values="time_s", sort=False) * 1e3
    text = (f"bench attention: B={a.batch}, H={a.heads}, D={a.head_dim}, causal={a.causal} (median ms)\n"
            f"{table.round(2).to_string()}\n\nscaling exponents\n{ex.round(2).to_string(index=False)}")
    bad = df[df["status"] != "ok"]
    if len(bad):
        text += "\n\nnot measured\n" + bad[["variant", "length", "mode", "status", "error"]].to_string(index=False)
    return text, df.to_dict("records")


def _bench_dryrun(a: argparse.Namespace) -> tuple[str, object]:
    import pandas as pd

    from .bench.dryrun import GPU_BYTES
    from .experiments import dry_run

    rows = dry_run(a.profile, a.only)
    df = pd.DataFrame(rows)
    cols = ["notebook", "model", "ran_on", "params", "batch", "seq_len", "eval_len", "train_gb", "fits_80gb"]
    text = (f"bench dry-run: profile {a.profile}, every model built at full size and stepped once "
            f"(training memory estimated against {GPU_BYTES / 1e9:.0f} GB)\n"
            + (df[cols].round(2).to_string(index=False) if len(df) else "no models"))
    too_big = df[~df["fits_80gb"]] if len(df) else df
    if len(too_big):
        text += f"\n\n{len(too_big)} model(s) above {GPU_BYTES / 1e9:.0f} GB: " + ", ".join(
            f"{r.notebook} {r.model} ({r.train_gb:.0f} GB)" for r in too_big.itertuples())
    return text, rows


def _bench_ring(a: argparse.Namespace) -> tuple[str, object]:
    import pandas as pd

    from .bench.ring import bench_ring

    bad = [t for t in a.lengths for w in a.ranks if t % w or t < 2]
    if bad or any(w < 1 for w in a.ranks):
        raise ConfigError(f"--lengths = {a.lengths}: each must be >= 2 and a multiple of every --ranks {a.ranks}")
    rows = bench_ring(a.lengths, a.ranks, a.batch, a.heads, a.head_dim, a.causal, a.repeats)
    table = pd.DataFrame(rows).pivot_table(index="length", columns="ranks", values=["peak_mb_per_rank", "time_ms"])
    return (f"bench ring: ring self-attention, forward + backward, B={a.batch}, H={a.heads}, D={a.head_dim}, "
            f"causal={a.causal} (peak MB added per rank, median ms)\n{table.round(1).to_string()}"), rows


def _cmd_bench(a: argparse.Namespace) -> int:
    from .bench.train import SIZES
    from .io import atomic_write_json

    _positive(a, *[k for k in ("batch", "seq", "rounds", "steps_per_round", "heads", "head_dim", "repeats")
                   if hasattr(a, k)])
    if hasattr(a, "size") and a.size not in SIZES:
        raise ConfigError(f"--size = {a.size!r}: unknown; valid choices: {', '.join(SIZES)}")
    text, data = a.bench(a)
    print(text)
    if a.json:
        atomic_write_json(a.json, data)
    return 0


def _bench_parsers(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="benchmarks: train | ablate | attention | ring | dry-run").add_subparsers(dest="what",
                                                                                              required=True)
    for name, fn, rounds, steps, about in (
            ("train", _bench_train, 6, 5, "training tokens/s vs transformers' Llama, MFU, bias encodings' cost"),
            ("ablate", _bench_ablate, 12, 4, "what each part of a training step costs, by leaving it out")):
        p = b.add_parser(name, help=about)
        p.add_argument("--size", default="cpu", help="model size: smoke | cpu | gpu")
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--seq", type=int, default=128)
        p.add_argument("--rounds", type=int, default=rounds)
        p.add_argument("--steps-per-round", type=int, default=steps)
        p.add_argument("--compile", action="store_true", help="torch.compile every step alike")
        p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
        p.set_defaults(fn=_cmd_bench, bench=fn)
    p = b.add_parser("dry-run", help="every model of a profile built at full size on the meta device, one step, "
                     "memory estimated")
    p.add_argument("--profile", default="gpu", help="smoke | cpu | gpu (default: gpu)")
    p.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook names or unique prefixes")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.set_defaults(fn=_cmd_bench, bench=_bench_dryrun)
    p = b.add_parser("ring", help="ring self-attention (sequence parallel): memory per rank vs sequence length")
    p.add_argument("--lengths", nargs="+", type=int, default=[1024, 2048, 4096])
    p.add_argument("--ranks", nargs="+", type=int, default=[1, 2], help="processes the sequence is split over")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--causal", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.set_defaults(fn=_cmd_bench, bench=_bench_ring)
    p = b.add_parser("attention", help="time and memory of one attention layer per variant and length")
    p.add_argument("--variants", nargs="+", metavar="SPEC",
                   help="names or {name: ..., param: value} (default: every registered attention)")
    p.add_argument("--bias-backends", nargs="*", help="exact backends timed with an ALiBi bias (default: all)")
    p.add_argument("--lengths", nargs="+", type=int, default=[256, 512, 1024, 2048])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.set_defaults(fn=_cmd_bench, bench=_bench_attention)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="attnlab", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute notebooks with papermill into a run folder")
    r.add_argument("--profile", default="auto", help="smoke | cpu | gpu | auto (default: auto)")
    r.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook names or unique prefixes (e.g. 01)")
    r.add_argument("--out", metavar="DIR", help="run folder (default: outputs/run-<profile>-<commit>)")
    r.add_argument("--jobs", type=int, default=1, help="notebooks executed at once (threads are shared)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter (repeatable)")
    r.add_argument("--force", action="store_true", help="rerun notebooks already completed in the folder")
    r.add_argument("--cell-timeout", type=int, default=4 * 3600,
                   help="seconds one cell may run (default 4 h: notebook 08 trains 27 models in one cell at cpu)")
    _cluster_arguments(r)
    r.set_defaults(fn=_cmd_run)
    sw = sub.add_parser("sweep", help="a grid over --set keys (YAML spec) into one folder with one report")
    sw.add_argument("spec", help="YAML: notebooks, grid (and profile, seeds, set, out)")
    sw.add_argument("--out", metavar="DIR", help="sweep folder (default: the spec's out, else outputs/sweeps/sweep)")
    sw.add_argument("--jobs", type=int, default=1, help="notebooks executed at once with --executor local")
    sw.add_argument("--force", action="store_true", help="rerun points already completed")
    sw.add_argument("--cell-timeout", type=int, default=4 * 3600, help="seconds one cell may run")
    _cluster_arguments(sw)
    sw.set_defaults(fn=_cmd_sweep)
    sub.add_parser("list", help="the notebooks and their parameters (defaults and presets)").set_defaults(
        fn=_cmd_list)
    rep = sub.add_parser("report", help="re-render the report of a run folder")
    rep.add_argument("dir")
    rep.set_defaults(fn=_cmd_report)
    cmp = sub.add_parser("compare", help="two run folders: changed verdicts, estimates, overlaid curves")
    cmp.add_argument("run_a")
    cmp.add_argument("run_b")
    cmp.add_argument("--out", metavar="FILE", help="HTML page (default: RUN_B/compare.html)")
    cmp.add_argument("--all", action="store_true", help="every claim in the terminal table, not only changes")
    cmp.set_defaults(fn=_cmd_compare)
    _bench_parsers(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ConfigError as e:
        print(f"attnlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnlab: interrupted; completed notebooks are kept in the run folder", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
