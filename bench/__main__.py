"""``python -m bench``: baselines and the service side by side, alternating,
for several rounds; prints the results table and the targets' verdicts."""

import argparse
import datetime
import shlex
import sys
import time

import pika.exceptions
import psycopg2
import requests

import settings

from .progress import say
from .report import Results, costs, verdicts
from .rows import rows
from .workloads import ORDER, WORKLOADS, Bench

#: What a run can fail with that says what to fix: a process that did not
#: start or answer, PostgreSQL or RabbitMQ down.
FAILURES = (RuntimeError, TimeoutError, OSError, psycopg2.Error, pika.exceptions.AMQPError, requests.RequestException)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every workload (default 3)")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument("--loop-count", type=int, default=1000, help="followers of the original's loop (a)")
    parser.add_argument("--sync-count", type=int, default=10_000, help="followers of (b), (c) and sync (1)")
    parser.add_argument("--one-count", type=int, default=2000, help="followers of (d) and async one-per-message (2)")
    parser.add_argument("--chunked-count", type=int, default=100_000, help="followers of async default chunking (3)")
    parser.add_argument("--publish-count", type=int, default=1000, help="confirmed publishes of (e)")
    parser.add_argument("--api-seconds", type=float, default=5, help="duration of the API load (4)")
    parser.add_argument("--api-clients", type=int, default=8,
                        help="concurrent clients (kept-alive connections) of the API load (4)")
    parser.add_argument("--latency-clients", type=int, default=16,
                        help="concurrent clients of the p99 under load (4)")
    parser.add_argument("--latency-requests", type=int, default=100, help="requests of the p99 latency (4)")
    parser.add_argument("--small-jobs", type=int, default=400, help="1-follower async jobs of (4) small jobs")
    parser.add_argument(
        "--depth-followers", type=int, default=1_000_000, help="followers of the user whose pages (6) reads"
    )
    parser.add_argument("--depth-requests", type=int, default=20, help="GETs of each page of (6), median taken")
    parser.add_argument("--memory-count", type=int, default=1_000_000, help="followers of the memory job (5), run once")
    parser.add_argument(
        "--prefix",
        default="bench",
        help="names the databases (followers_<prefix>...) and queues (<prefix>...); must start with 'bench'",
    )
    args = parser.parse_args(argv)
    args.workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {', '.join(sorted(unknown))}; choose from {','.join(WORKLOADS)}")
    if not args.prefix.startswith("bench"):
        parser.error("--prefix must start with 'bench', so a run never touches the service's or the tests' data")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if min(args.small_jobs, args.depth_requests) < 1 or args.depth_followers < 2:
        parser.error("--small-jobs and --depth-requests must be at least 1, --depth-followers at least 2")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    results = Results(rows(args))
    bench = Bench(args)
    say(f"scrypt N={settings.PASSWORD_HASH_COST}; {args.rounds} rounds of {', '.join(args.workloads)}")
    try:
        bench.set_up()
        for number in range(1, args.rounds + 1):
            bench.round = number
            for key in ORDER:
                if key in bench.selected:
                    measure(bench, results, key, f"round {number}/{args.rounds}")
        if "memory" in bench.selected:
            measure(bench, results, "memory", "once")
    except FAILURES as error:
        say(f"FAILED: {type(error).__name__}: {error}")
        say("Check that PostgreSQL and RabbitMQ run (./run bench starts them) and read the logs under artifacts/logs/.")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        say("stopping the processes and dropping the benchmark's databases and queues")
        bench.tear_down()
    command = " ".join(["python -m bench", *map(shlex.quote, argv)])
    print(f"\n{datetime.date.today().isoformat()} · `{command}` · scrypt N={settings.PASSWORD_HASH_COST}\n")
    print(results.table())
    print()
    print(verdicts(results))
    if costs(results):
        print()
        print(costs(results))
    return 0


def measure(bench, results, key, where):
    say(f"{where}: {key} …")
    started = time.perf_counter()
    for row, value in bench.run(key).items():
        results.add(row, value)
        label, size, unit = results.rows[row]
        say(f"{where}: {label}, {size}: {value:,.1f} {unit}")
    say(f"{where}: {key} took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
