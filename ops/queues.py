"""The queues as an operator sees them: RabbitMQ's figures (depths, rates,
consumers) from its management HTTP API, the dead letters PostgreSQL
recorded, and the outbox backlog.

RabbitMQ's figures are the broker's own: no AMQP client can count unacked
messages or consumers of other connections. When the management API does
not answer, the overview still answers with what PostgreSQL knows and
says the broker's figures are unavailable.
"""

import base64
import json
import urllib.error
import urllib.request
from urllib.parse import quote, unquote, urlsplit

import settings
from db import DeadLetter, Outbox, database

#: Seconds to wait for the management API: an overview must stay quick.
MANAGEMENT_TIMEOUT_S = 2


class BrokerFiguresUnavailable(Exception):
    pass


def _management_target():
    """(base URL without credentials, Authorization header, vhost)."""
    management = urlsplit(settings.RABBITMQ_MANAGEMENT_URL)
    amqp = urlsplit(settings.RABBITMQ_URL.split(";")[0])
    source = management if management.username else amqp
    user, password = unquote(source.username or "guest"), unquote(source.password or "guest")
    netloc = (management.hostname or "127.0.0.1") + (f":{management.port}" if management.port else "")
    base = f"{management.scheme}://{netloc}{management.path.rstrip('/')}"
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return base, f"Basic {credentials}", unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"


def _queue(base, authorization, vhost, name):
    """The management API's view of one queue, or None if it does not exist."""
    request = urllib.request.Request(
        f"{base}/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}",
        headers={"Authorization": authorization},
    )
    try:
        with urllib.request.urlopen(request, timeout=MANAGEMENT_TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise BrokerFiguresUnavailable(f"RabbitMQ's management API answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise BrokerFiguresUnavailable(f"RabbitMQ's management API does not answer: {reason}") from None


def _rate(queue, name):
    return float(((queue or {}).get("message_stats") or {}).get(f"{name}_details", {}).get("rate", 0.0))


def broker_figures(queue_name):
    """RabbitMQ's figures of a work queue and its delay (.DQ) and dead-letter
    (.XQ) queues; a queue not declared yet counts as empty. Raises
    BrokerFiguresUnavailable. (The management API refreshes its figures
    every few seconds: they lag by that much.)"""
    base, authorization, vhost = _management_target()
    work, delay, dead = (_queue(base, authorization, vhost, name)
                         for name in (queue_name, f"{queue_name}.DQ", f"{queue_name}.XQ"))
    held = lambda queue: (queue or {}).get("messages_ready", 0) + (queue or {}).get("messages_unacknowledged", 0)  # noqa: E731
    return {
        "ready": (work or {}).get("messages_ready", 0),
        "unacked": (work or {}).get("messages_unacknowledged", 0),
        "consumers": (work or {}).get("consumers", 0),
        "inRate": _rate(work, "publish"),
        "outRate": _rate(work, "ack"),
        # Dramatiq's delay-queue consumers hold delayed messages unacked until they are due.
        "delayed": held(delay),
        "deadLettered": held(dead),
    }


def outbox_backlog():
    """Messages committed to the transactional outbox and not yet published,
    and the age of the oldest (as /health shows them)."""
    with database.connection_context():
        pending, oldest = Outbox.backlog()
    return {"pending": pending, "oldestAgeSeconds": oldest}


def overview(queue_name=None):
    """What GET /api/v1/queues answers: per work queue RabbitMQ's figures
    (null when the management API does not answer) and the dead letters
    recorded in PostgreSQL; whether the broker's figures are available; and
    the outbox backlog."""
    queue_name = queue_name or settings.QUEUE_NAME
    try:
        figures, broker = broker_figures(queue_name), {"available": True}
    except BrokerFiguresUnavailable as error:
        figures = dict.fromkeys(("ready", "unacked", "consumers", "inRate", "outRate", "delayed", "deadLettered"))
        broker = {"available": False, "description": str(error)}
    with database.connection_context():
        recorded = DeadLetter.count_for(queue_name)
    return {
        "queues": [{"name": queue_name, **figures, "deadLettersRecorded": recorded}],
        "broker": broker,
        "outbox": outbox_backlog(),
    }
