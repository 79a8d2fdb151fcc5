"""What a peer's run observed, read where a user would look: the database,
the queues, and the peer's delivery rows (``peer_deliveries``). The same
questions as ``lab.observe.Observer`` asks of our workers, and the same
answers for what the two share (followers, order, queues)."""

import json

import pika

import settings
from lab.observe import Observer, _alive


class PeerObserver(Observer):
    """Read-only queries against one peer stack's database and queues."""

    def events(self):
        """Rows shaped as ``Observer.events``: the followers login stands for
        the job, the first follower's index for the unit."""
        return self._rows(
            """
            SELECT message_id, followers_login, first, user_id, pid, thread, redelivered::int,
                   extract(epoch FROM started), extract(epoch FROM ended), outcome, error
            FROM peer_deliveries ORDER BY started
            """
        )

    def unique_violations(self):
        return self._value(
            "SELECT count(*) FROM peer_deliveries WHERE error ILIKE '%%unique%%' OR error ILIKE '%%IntegrityError%%'"
        )

    def worker_pids(self):
        return self._value("SELECT count(DISTINCT pid) FROM peer_deliveries WHERE outcome = 'done'")

    def seconds_since_activity(self):
        return self._value(
            "SELECT extract(epoch FROM now() - max(greatest(started, coalesce(ended, started)))) FROM peer_deliveries"
        )

    def _running_pids(self):
        return [pid for (pid,) in self._rows("SELECT DISTINCT pid FROM peer_deliveries WHERE outcome = 'running'")]

    def running_now(self):
        return sum(1 for pid in self._running_pids() if _alive(pid))

    def worker_crashes(self):
        return sum(1 for pid in self._running_pids() if not _alive(pid))

    # --- Units: what the intake published --------------------------------

    def complete_units(self, units):
        """The units (user id, followers login, first, count) whose every
        follower exists and follows the user."""
        rows = self._rows(
            """
            SELECT s.author_id, u.login FROM subscriptions s JOIN users u ON u.id = s.follower_id
            WHERE s.author_id = ANY(%s)
            """,
            (sorted({unit[0] for unit in units}),),
        )
        followed = set(rows)
        return [unit for unit in units
                if all((unit[0], f"{unit[1]}_#{i}") in followed for i in range(unit[2], unit[2] + unit[3]))]

    def dead_units(self):
        """The units of the messages in the dead-letter queue, read without
        taking them (each is handed back when the channel closes)."""
        connection = pika.BlockingConnection(pika.URLParameters(settings.RABBITMQ_URL))
        units = []
        try:
            channel = connection.channel()
            while True:
                method, _, body = channel.basic_get(f"{self.stack.queue_name}.XQ", auto_ack=False)
                if method is None:
                    break
                units.append(unit_of_body(body))
        except pika.exceptions.ChannelClosedByBroker:
            pass  # no dead-letter queue: nothing dead
        finally:
            if connection.is_open:
                connection.close()
        return units


def unit_of_body(body):
    """(user id, followers login, first, count) of a peer's message: a
    Dramatiq message is an object with ``args``, a Celery one (protocol 2)
    the list [args, kwargs, embed]."""
    try:
        decoded = json.loads(body)
        args = decoded["args"] if isinstance(decoded, dict) else decoded[0]
        user_id, login, count = args[:3]
        return user_id, login, (args[3] if len(args) > 3 else 0), count
    except (ValueError, KeyError, IndexError, TypeError):
        return None
