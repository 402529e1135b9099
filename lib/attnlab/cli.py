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

    overrides = C.parse_overrides(a.set or [])
    if a.jobs < 1:
        raise ConfigError(f"--jobs = {a.jobs}: must be >= 1")
    if a.cell_timeout < 1:
        raise ConfigError(f"--cell-timeout = {a.cell_timeout}: must be >= 1")
    p = runner.plan(a.profile, a.only, a.out, overrides)  # validates everything first
    print(f"run folder: {p.run_dir} (profile {p.profile}; {len(p.jobs)} notebook(s))")
    runner.execute(p, jobs=a.jobs, force=a.force, cell_timeout=a.cell_timeout)
    fails = runner.failures(p)
    print(f"report: {p.run_dir / 'report.html'}  (also report.md, claims.csv)")
    for f in fails:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if fails else 0


def _cmd_list(a: argparse.Namespace) -> int:
    C._ensure_notebooks_registered()
    for name in C.NOTEBOOKS.names():
        cls = C.NOTEBOOKS.get(name)
        presets = C.load_presets(name)
        print(f"{name}  ({(cls.__doc__ or '').strip().splitlines()[0]})")
        defaults = C.to_dict(C.from_dict(cls, {}))
        for key in C.known_keys(cls):
            val = defaults
            for part in key.split("."):
                val = val[part]
            per = []
            for prof in C.PROFILES:
                node: object = C.nest(presets[prof])
                for part in key.split("."):
                    node = node.get(part, {}) if isinstance(node, dict) else {}
                if node != {}:
                    per.append(f"{prof}={node}")
            print(f"    {key} = {val}" + (f"   [{', '.join(per)}]" if per else ""))
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from .report import render

    path = render(Path(a.dir))
    print(f"report: {path}")
    return 0


def _cmd_bench(a: argparse.Namespace) -> int:
    from . import bench

    return bench.main(a.what, a.rest)


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
    r.add_argument("--cell-timeout", type=int, default=3600, help="seconds one cell may run")
    r.set_defaults(fn=_cmd_run)
    lst = sub.add_parser("list", help="the notebooks and their parameters (defaults and presets)")
    lst.set_defaults(fn=_cmd_list)
    rep = sub.add_parser("report", help="re-render the report of a run folder")
    rep.add_argument("dir")
    rep.set_defaults(fn=_cmd_report)
    b = sub.add_parser("bench", help="benchmarks (train | ablate | attention)")
    b.add_argument("what")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(fn=_cmd_bench)
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
