"""python -m ops jobs prune: delete old finished jobs, so that the jobs
table (and the counts and pages the console reads from it) stays the size
of the recent past. Run it from cron or a systemd timer
(docs/deploying.md)."""

import sys

from db import Job, database

from .dlq import check_token


def cmd_prune(args):
    if args.days < 1:
        print(f"--days must be 1 or more, not {args.days}", file=sys.stderr)
        return 2
    if not args.dry_run and not check_token(args):
        return 1
    with database.connection_context():
        if args.dry_run:
            print(f"{Job.prunable(days=args.days):,} jobs finished more than {args.days} days ago"
                  " would be deleted (--dry-run: nothing was)")
            return 0
        pruned = 0
        while deleted := Job.prune(days=args.days):
            pruned += deleted
            print(f"deleted {pruned:,} jobs so far", file=sys.stderr, flush=True)
    print(f"deleted {pruned:,} jobs finished more than {args.days} days ago, with their units")
    return 0


def add_parser(commands):
    parser = commands.add_parser("jobs", help="delete old finished jobs")
    verbs = parser.add_subparsers(dest="verb", required=True)
    prune = verbs.add_parser("prune", help="delete jobs finished (done, failed, cancelled) more than --days days ago,"
                                           " with their units; jobs in flight, and jobs with a dead letter, stay")
    prune.add_argument("--days", type=int, required=True, help="keep the jobs that changed within this many days")
    prune.add_argument("--dry-run", action="store_true", help="count them, delete nothing")
    prune.add_argument("--token", help="API_TOKEN, when it is set")
    prune.set_defaults(func=cmd_prune)
