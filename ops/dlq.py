"""python -m ops dlq: list, inspect, replay or purge dead letters from a shell.

The work is ``ops.dead_letters``'s, which the API and the console call too.
"""

import hmac
import json
import sys

import settings

from . import dead_letters


def check_token(args):
    """Whether the command may change anything: --token equals API_TOKEN, when it is set."""
    if settings.API_TOKEN and not hmac.compare_digest((args.token or "").encode(), settings.API_TOKEN.encode()):
        print(f"{args.verb} needs --token equal to API_TOKEN", file=sys.stderr)
        return False
    return True


def cmd_list(args):
    count = 0
    with dead_letters.walk(args.queue) as queue:
        for letter in queue.messages():
            count += 1
            print(letter.summary())
    print(f"{count} dead letters in {queue.dead_name}")
    return 0


def cmd_show(args):
    with dead_letters.walk(args.queue) as queue:
        for letter in queue.messages():
            if letter.message_id == args.message_id:
                print(letter.summary())
                print(json.dumps(letter.message, indent=2) if letter.message else letter.body)
                return 0
    print(f"no dead letter {args.message_id} in {queue.dead_name}", file=sys.stderr)
    return 1


def _act(args, verb):
    if not (args.all or args.message_ids):
        print("name message ids, or --all", file=sys.stderr)
        return 2
    if not check_token(args):
        return 1
    action = {"replay": dead_letters.replay, "purge": dead_letters.purge}[verb]
    outcome = action(None if args.all else args.message_ids, queue_name=args.queue)
    for _message_id, why in outcome.failed:
        print(why, file=sys.stderr)
    missing = set(args.message_ids) - set(outcome.done) - {message_id for message_id, _ in outcome.failed}
    for message_id in sorted(missing) if not args.all else ():
        print(f"no dead letter {message_id} in {outcome.queue}", file=sys.stderr)
    past = {"replay": "replayed", "purge": "purged"}[verb]
    print(f"{past} {len(outcome.done)} dead letters from {outcome.queue}"
          + (f"; {len(outcome.failed)} could not be" if outcome.failed else ""))
    return 1 if outcome.failed or (missing and not args.all) else 0


def add_parser(commands):
    parser = commands.add_parser("dlq", help="list, show, replay or purge dead letters")
    parser.add_argument("--queue", help=f"the work queue (default: QUEUE_NAME, {settings.QUEUE_NAME})")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="every dead letter with its reason").set_defaults(func=cmd_list)
    show = verbs.add_parser("show", help="one dead letter in full")
    show.add_argument("message_id")
    show.set_defaults(func=cmd_show)
    for verb in ("replay", "purge"):
        action = verbs.add_parser(verb, help=f"{verb} dead letters")
        action.add_argument("message_ids", nargs="*")
        action.add_argument("--all", action="store_true")
        action.add_argument("--token", help="API_TOKEN, when it is set")
        action.set_defaults(func=lambda args, verb=verb: _act(args, verb))
