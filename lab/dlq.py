"""python -m lab dlq: list, inspect, replay or purge dead letters.

Dead letters stay in RabbitMQ (``<QUEUE_NAME>.XQ``); why each one died is in
PostgreSQL (``dead_letters``, written by the workers). Replaying a message
publishes it back to the work queue with fresh attempts; units are
idempotent, so replaying one that did get done is harmless.
"""

import hmac
import json
import sys

import pika

import settings
from actors.connection import connect
from db import DeadLetter, DeliveryAttempt, database


def _decode(body):
    try:
        message = json.loads(body)
        return message if isinstance(message, dict) else None
    except (UnicodeDecodeError, ValueError):
        return None


def _death_reason(properties):
    deaths = (properties.headers or {}).get("x-death") or []
    return deaths[0].get("reason", b"").decode() if deaths and isinstance(deaths[0].get("reason"), bytes) \
        else (deaths[0].get("reason") if deaths else None)


class DeadLetterQueue:
    """Walks the dead-letter queue once: every message is fetched unacked,
    and each is either acted on (acked) or put back when the walk ends."""

    def __init__(self, queue_name=None):
        self.queue_name = queue_name or settings.QUEUE_NAME
        self.dead_name = f"{self.queue_name}.XQ"
        self.connection = connect(settings.RABBITMQ_URL)  # any node of a cluster
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.connection.is_open:
            self.connection.close()  # whatever was not acked goes back, in order

    def messages(self):
        try:
            self.channel.queue_declare(queue=self.dead_name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            self.channel = self.connection.channel()
            self.channel.confirm_delivery()
            return
        while True:
            method, properties, body = self.channel.basic_get(self.dead_name, auto_ack=False)
            if method is None:
                return
            yield Letter(self, method.delivery_tag, properties, body)


class Letter:
    def __init__(self, queue, tag, properties, body):
        self.queue = queue
        self.tag = tag
        self.properties = properties
        self.body = body
        self.message = _decode(body)
        self.message_id = (self.message or {}).get("message_id") or f"(undecodable, {len(body)} bytes)"

    def record(self):
        if self.message is None:
            return None
        with database.connection_context():
            return DeadLetter.get_or_none(DeadLetter.message_id == self.message_id)

    def reason(self):
        record = self.record()
        if record is not None:
            return record.reason, record.attempts
        if self.message is None:
            return "not a Dramatiq message (bad JSON or encoding); see the worker log", None
        return f"rejected by the broker or a worker ({_death_reason(self.properties) or 'no reason kept'})", None

    def summary(self):
        reason, attempts = self.reason()
        if self.message is None:
            what = repr(self.body[:60])
        else:
            what = f"{self.message.get('actor_name')}({json.dumps(self.message.get('kwargs'))[:80]})"
        return f"{self.message_id}  attempts={attempts or '?'}  {what}\n    reason: {reason}"

    def replay(self):
        if self.message is None:
            raise ValueError(f"{self.message_id} is not a Dramatiq message and cannot be replayed; purge it")
        self.message.setdefault("options", {}).pop("retries", None)
        self.message["options"].pop("traceback", None)
        with database.connection_context():
            DeliveryAttempt.delete().where(DeliveryAttempt.message_id == self.message_id).execute()
        self.queue.channel.basic_publish(
            exchange="",
            routing_key=self.message.get("queue_name") or self.queue.queue_name,
            body=json.dumps(self.message).encode(),
            properties=pika.BasicProperties(delivery_mode=2),
        )
        self._forget()

    def purge(self):
        self._forget()

    def _forget(self):
        self.queue.channel.basic_ack(self.tag)
        if self.message is not None:
            with database.connection_context():
                DeadLetter.delete().where(DeadLetter.message_id == self.message_id).execute()


def _check_token(args):
    if settings.API_TOKEN and not hmac.compare_digest((args.token or "").encode(), settings.API_TOKEN.encode()):
        print("replay and purge need --token equal to API_TOKEN", file=sys.stderr)
        return False
    return True


def cmd_list(args):
    count = 0
    with DeadLetterQueue(args.queue) as queue:
        for letter in queue.messages():
            count += 1
            print(letter.summary())
    print(f"{count} dead letters in {queue.dead_name}")
    return 0


def cmd_show(args):
    with DeadLetterQueue(args.queue) as queue:
        for letter in queue.messages():
            if letter.message_id == args.message_id:
                print(letter.summary())
                print(json.dumps(letter.message, indent=2) if letter.message else letter.body)
                return 0
    print(f"no dead letter {args.message_id} in {queue.dead_name}", file=sys.stderr)
    return 1


def _act(args, action):
    if not (args.all or args.message_ids):
        print("name message ids, or --all", file=sys.stderr)
        return 2
    if not _check_token(args):
        return 1
    done, failed = 0, 0
    with DeadLetterQueue(args.queue) as queue:
        for letter in queue.messages():
            if args.all or letter.message_id in args.message_ids:
                try:
                    getattr(letter, action)()
                    done += 1
                except ValueError as error:
                    print(error, file=sys.stderr)
                    failed += 1
    past = {"replay": "replayed", "purge": "purged"}[action]
    print(f"{past} {done} dead letters from {queue.dead_name}" + (f"; {failed} could not be" if failed else ""))
    return 1 if failed else 0


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
