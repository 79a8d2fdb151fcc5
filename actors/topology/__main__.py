"""python -m actors.topology declare|migrate: see actors/topology/__init__.py."""

import sys

from pika.exceptions import AMQPConnectionError

import settings

from ..confirms import NotConfirmed
from ..connection import connect
from . import QueueMismatch, declare, queue_names
from . import __doc__ as usage
from .migration import MigrationRefused, migrate


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in ("declare", "migrate"):
        print(usage.split("\n\n")[0], file=sys.stderr)
        return 2
    command = argv[0]
    names = queue_names(settings.QUEUE_NAME)
    described = f"{', '.join(names)} as {settings.QUEUE_TYPE} queues"
    try:
        connection = connect(settings.RABBITMQ_URL, timeout=settings.BROKER_TIMEOUT_S)
    except AMQPConnectionError as error:
        print(f"RabbitMQ is unreachable: {error}; check RABBITMQ_URL", file=sys.stderr)
        return 1
    try:
        if command == "migrate":
            moved = migrate(connection, names, report=print)
            print(f"{described}: migrated, {moved} messages moved")
        else:
            declare(connection, names)
            print(f"{described}: declared")
    except QueueMismatch as error:
        print(error, file=sys.stderr)
        return 1
    except MigrationRefused as error:
        print(f"not migrated: {error}", file=sys.stderr)
        return 1
    except NotConfirmed as error:
        print(f"not migrated: {error}; nothing is lost, run it again to go on where it stopped", file=sys.stderr)
        return 1
    finally:
        if connection.is_open:
            connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
