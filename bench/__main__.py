"""``python -m bench``: the baseline, the product in memory and on the stand-in; one table."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from bench.report import Context, details, now, table
from bench.run import Bench, Plan, Sizes
from bench.systems import Kind, System
from infra.settings import DEFAULT_AMQP_URL


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--sagas", type=int, help="sagas in the saturation phase (baseline, in-memory)")
    p.add_argument("--standin-sagas", type=int, help="sagas in the stand-in's saturation phase")
    p.add_argument("--inflight", type=int, default=256, help="sagas in flight at saturation")
    p.add_argument("--runs", type=int, help="runs per system; figures are medians (default 3)")
    p.add_argument("--quick", action="store_true", help="small phases and one run: a smoke test")
    p.add_argument("--systems", default="baseline,baseline+uvloop,memory,memory+uvloop,standin",
                   help="comma-separated: baseline, memory, standin, each optionally +uvloop or "
                        "+asyncio (the product runs on asyncio unless told otherwise)")
    p.add_argument("--rss-sagas", type=int, help="sagas in flight for the RSS reading (10000)")
    p.add_argument("--standin-rss-sagas", type=int,
                   help="the same on the stand-in, whose inserts slow down as it fills (2000)")
    p.add_argument("--no-rss", action="store_true", help="skip the resident-memory readings")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the system's processes (experiments)")
    p.add_argument("--results", type=Path, help="also write the table and details to this file")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="py-spy the processes during saturation (slows them; figures not valid)")
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' log files")
    return p


def _sizes(args: argparse.Namespace) -> dict[Kind, Sizes]:
    q = args.quick
    fast_sat = args.sagas or (600 if q else 2000)
    slow_sat = args.standin_sagas or (64 if q else 150)
    fast = Sizes(warmup=50 if q else 100, latency_1=50 if q else 200,
                 latency_64=max(64, fast_sat // 2), saturation=fast_sat,
                 saturation_inflight=args.inflight, rss=args.rss_sagas or (2000 if q else 10_000))
    slow = Sizes(warmup=10 if q else 20, latency_1=10 if q else 30, latency_64=max(64, slow_sat),
                 saturation=slow_sat, saturation_inflight=64,
                 rss=args.standin_rss_sagas or (300 if q else 2000))
    return {Kind.BASELINE: fast, Kind.MEMORY: fast, Kind.STANDIN: slow}


def main(argv: list[str]) -> int:
    """Run the plan and print the table (and write it, with --results)."""
    args = _parser().parse_args(argv)
    try:
        systems = tuple(System.parse(s) for s in args.systems.split(",") if s.strip())
    except ValueError as e:
        print(f"python -m bench: --systems: {e}", file=sys.stderr)
        return 2
    if bad := [e for e in args.env if "=" not in e or not e.split("=", 1)[0]]:
        print(f"python -m bench: --env wants NAME=VALUE, got {bad[0]!r}", file=sys.stderr)
        return 2
    if args.profile is not None and not (Path(sys.executable).parent / "py-spy").exists():
        print("python -m bench: --profile needs py-spy: pip install -c constraints.txt -e '.[bench]'",
              file=sys.stderr)
        return 2
    log_dir = Path(tempfile.mkdtemp(prefix="saga-bench-"))
    plan = Plan(systems=systems, sizes=_sizes(args), runs=args.runs or (1 if args.quick else 3),
                rss=not args.no_rss, amqp_url=os.environ.get("SAGA_AMQP_URL", DEFAULT_AMQP_URL),
                log_dir=log_dir, extra_env=dict(e.split("=", 1) for e in args.env),
                profile_dir=args.profile)
    # SIGTERM behaves like Ctrl-C: the run is cancelled and every deployment's processes and
    # queues are removed on the way out, rather than left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = now()
    bench = Bench(plan, lambda line: print(line, file=sys.stderr, flush=True))
    try:
        figures, rss = asyncio.run(bench.run())
    except BaseException:
        print(f"benchmark failed; logs in {log_dir}", file=sys.stderr)
        raise
    command = shlex.join([".venv/bin/python", "-m", "bench", *argv])
    context = Context(command, os.cpu_count() or 0, started, bench.background_per_second)
    text = f"{table(plan, figures, rss)}\n\n{details(plan, figures, rss, context)}\n"
    print(text)
    if args.results is not None:
        args.results.write_text(text)
    if args.keep_logs:
        print(f"logs in {log_dir}", file=sys.stderr)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
