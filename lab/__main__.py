"""python -m lab: the failure lab.

  python -m lab list                          the scenarios
  python -m lab run SCENARIO [--mode naive|robust]
  python -m lab all                           every scenario in every mode
  (run and all also write an HTML report: artifacts/lab/latest.html)
  python -m lab compare [--scenarios a,b] [--implementations dramatiq,celery,ours] [--window S] [--cluster]
                                              the scenarios against bare Dramatiq, Celery and ours
                                              (its report: artifacts/lab/compare.html)
  python -m lab dlq ...                       the same as python -m ops dlq ...
  python -m lab chaos [--duration S] ...      worker kills and outages at once
  python -m lab cluster [--queue-type T]      a RabbitMQ node lost under load: classic vs quorum
  python -m lab publish-probe                 a publish through a quorum leader's failover:
                                              transactions against publisher confirms
"""

import argparse
import shutil
import sys
import time

from harness import ROOT
from ops import dlq

from .report import write_report
from .runner import run, table
from .scenarios import BY_NAME, SCENARIOS


def cmd_list(args):
    for scenario in SCENARIOS:
        modes = ", ".join(f"{name}: {mode.expected}" for name, mode in scenario.modes.items())
        print(f"{scenario.name:<11} {scenario.original:<3} {scenario.title}\n{'':16}{modes}")
    return 0


def _write_reports(results, path):
    """The report at ``path``, or a timestamped one beside latest.html."""
    folder = ROOT / "artifacts" / "lab"
    written = write_report(results, path or folder / f"report-{time.strftime('%Y%m%d-%H%M%S')}.html")
    print(f"\nreport: {written}")
    if not path:
        shutil.copyfile(written, folder / "latest.html")
        print(f"        {folder / 'latest.html'}")


def _run_many(pairs, args):
    results = [run(scenario, mode) for scenario, mode in pairs]
    print()
    print(table(results))
    _write_reports(results, args.report)
    failed = [r for r in results if r.verdict == "FAILED"]
    if failed:
        print(f"\n{len(failed)} FAILED: the logs of the last run are in artifacts/logs/lab/", file=sys.stderr)
    return 1 if failed else 0


def cmd_run(args):
    scenario = BY_NAME.get(args.scenario)
    if scenario is None:
        print(f"no scenario {args.scenario!r}; `python -m lab list` shows them", file=sys.stderr)
        return 2
    modes = [args.mode] if args.mode else list(scenario.modes)
    unknown = [mode for mode in modes if mode not in scenario.modes]
    if unknown:
        print(f"{scenario.name} has no {unknown[0]} mode; it has: {', '.join(scenario.modes)}", file=sys.stderr)
        return 2
    return _run_many([(scenario, mode) for mode in modes], args)


def cmd_all(args):
    return _run_many([(scenario, mode) for scenario in SCENARIOS for mode in scenario.modes], args)


def cmd_compare(args):
    try:
        from .compare import BY_KEY, DEFAULT_WINDOW_S, ROW_BY_NAME, ROWS, matrix_text, run_cluster_row, run_compare
        from .compare_report import write_compare_report
    except ImportError as error:  # Celery is a lab-only dependency
        print(f"lab compare needs the lab's dependencies ({error}): "
              ".venv/bin/pip install -r requirements-lab.txt", file=sys.stderr)
        return 2
    names = args.scenarios.split(",") if args.scenarios else [row.name for row in ROWS]
    cluster = args.cluster or "cluster" in names  # `lab cluster`'s scenario, a row of its own
    rows = [ROW_BY_NAME.get(name) for name in names if name != "cluster"]
    implementations = [BY_KEY.get(key) for key in args.implementations.split(",")]
    if None in rows or None in implementations:
        print(f"scenarios: {', '.join(ROW_BY_NAME)}, cluster; implementations: {', '.join(BY_KEY)}",
              file=sys.stderr)
        return 2
    window = args.window or DEFAULT_WINDOW_S
    cells = run_compare(rows, implementations, window=window)
    cluster_row = run_cluster_row(implementations, short=args.short) if cluster else None
    print()
    if cells:
        print(matrix_text(cells))
    if cluster_row:
        print("\n".join(cluster_row.lines))
    command = " ".join(["python -m lab compare", *sys.argv[2:]])
    path = args.report or ROOT / "artifacts" / "lab" / "compare.html"
    written = write_compare_report(cells, path, command=command, measured=time.strftime("%Y-%m-%d %H:%M"),
                                   cluster=cluster_row)
    print(f"\nreport: {written}")
    failed = sum(cell.implementation.key == "ours" and cell.verdict != "SOLVED" for cell in cells)
    failed += bool(cluster_row) and cluster_row.verdicts.get("ours", "SOLVED") != "SOLVED"
    if failed:
        print(f"\n{failed} of our cells FAILED: logs in artifacts/logs/", file=sys.stderr)
    return 1 if failed else 0


def cmd_chaos(args):
    from .chaos import run_chaos

    lines, passed = run_chaos(
        duration=args.duration, jobs=args.jobs, users=args.users, kill_interval=args.kill_interval,
        outages=not args.no_outages,
    )
    print("\n".join(lines))
    return 0 if passed else 1


def cmd_cluster(args):
    from .cluster import Timing, run_cluster

    queue_types = ("classic", "quorum") if args.queue_type == "both" else (args.queue_type,)
    lines, passed, _, _ = run_cluster(queue_types=queue_types, timing=Timing.short() if args.short else None)
    print("\n".join(lines))
    return 0 if passed else 1


def cmd_publish_probe(args):
    from .publish_probe import run_probe

    lines, passed = run_probe()
    print("\n".join(lines))
    return 0 if passed else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the scenarios").set_defaults(func=cmd_list)
    run_parser = commands.add_parser("run", help="run one scenario")
    run_parser.add_argument("scenario")
    run_parser.add_argument("--mode", choices=["naive", "robust"])
    run_parser.set_defaults(func=cmd_run)
    all_parser = commands.add_parser("all", help="run every scenario in every mode")
    all_parser.set_defaults(func=cmd_all)
    for command in (run_parser, all_parser):
        command.add_argument("--report", metavar="PATH", help="write the HTML report here "
                             "(default: artifacts/lab/report-<time>.html and artifacts/lab/latest.html)")
    compare = commands.add_parser("compare", help="the scenarios against bare Dramatiq, Celery and ours")
    compare.add_argument("--scenarios", help="comma-separated, cluster among them if wanted "
                         "(default: every compared scenario)")
    compare.add_argument("--cluster", action="store_true", help="add lab cluster's scenario: every column on one "
                         "three-node lab cluster that loses a node under load (about 2 minutes more)")
    compare.add_argument("--short", action="store_true", help="the cluster scenario's shorter phases")
    compare.add_argument("--implementations", default="dramatiq,celery,ours",
                         help="comma-separated columns (default: dramatiq,celery,ours)")
    compare.add_argument("--window", type=float, help="longest wait for a cell to drain, in s (default 30)")
    compare.add_argument("--report", metavar="PATH", help="write the HTML report here "
                         "(default: artifacts/lab/compare.html)")
    compare.set_defaults(func=cmd_compare)
    dlq.add_parser(commands)  # the lab's own dead letters, with the operations tool
    chaos = commands.add_parser("chaos", help="kill workers, restart RabbitMQ and PostgreSQL, lose nothing")
    chaos.add_argument("--duration", type=float, default=60, help="seconds of chaos (default 60)")
    chaos.add_argument("--jobs", type=int, default=40, help="requests to submit (default 40)")
    chaos.add_argument("--users", type=int, default=4, help="users they add followers to (default 4)")
    chaos.add_argument("--kill-interval", type=float, default=4, help="seconds between SIGKILLs (default 4)")
    chaos.add_argument("--no-outages", action="store_true", help="kill workers only; restart no service")
    chaos.set_defaults(func=cmd_chaos)
    cluster = commands.add_parser("cluster", help="a three-node RabbitMQ cluster of the lab's own loses a node "
                                  "under load: classic against quorum queues")
    cluster.add_argument("--queue-type", choices=["classic", "quorum", "both"], default="both",
                         help="which queue types to run, side by side (default both)")
    cluster.add_argument("--short", action="store_true", help="shorter phases (the test's)")
    cluster.set_defaults(func=cmd_cluster)
    commands.add_parser("publish-probe", help="what RabbitMQ says of a publish through a quorum queue's leader "
                        "failover, against what the queue holds").set_defaults(func=cmd_publish_probe)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
