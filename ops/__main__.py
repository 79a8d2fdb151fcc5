"""python -m ops: operations on a running service.

  python -m ops dlq list|show|replay|purge    the dead-letter queue
  python -m ops jobs prune --days N           delete old finished jobs
"""

import argparse
import sys

import pika.exceptions
from peewee import InterfaceError, OperationalError

from . import dlq, jobs
from .dead_letters import DeadLetterQueueBusy


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dlq.add_parser(commands)
    jobs.add_parser(commands)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (OperationalError, InterfaceError) as error:
        print(f"PostgreSQL does not answer ({str(error).strip()}); check DATABASE_URL and that it runs",
              file=sys.stderr)
    except pika.exceptions.AMQPError as error:
        print(f"RabbitMQ does not answer ({error!r}); check RABBITMQ_URL and that it runs", file=sys.stderr)
    except DeadLetterQueueBusy as error:
        print(error, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
