"""What a scenario observed, read from where a user would look: the
database, the queues, and the events the workers recorded. Never from what
the runner expected."""

import os

import psycopg2

from db.database import connect_params
from harness import queue_depth


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Observer:
    """Read-only queries against one lab stack's database and queues."""

    def __init__(self, stack):
        self.stack = stack
        self.conn = psycopg2.connect(**connect_params(stack.database_url))
        self.conn.autocommit = True

    def close(self):
        self.conn.close()

    def _rows(self, query, params=()):
        with self.conn.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()

    def _value(self, query, params=()):
        return self._rows(query, params)[0][0]

    # --- Jobs ------------------------------------------------------------

    def jobs(self):
        """Per job: (id, user, units, units done, units failed)."""
        return self._rows(
            """
            SELECT j.id, j.user_id, j.units,
                   count(*) FILTER (WHERE u.status = 'done'),
                   count(*) FILTER (WHERE u.status = 'failed')
            FROM jobs j LEFT JOIN job_units u ON u.job_id = j.id
            GROUP BY j.id ORDER BY j.id
            """
        )

    def jobs_requested(self):
        """Followers the committed jobs asked for (a request whose answer was
        lost may still have committed its job)."""
        return self._value("SELECT COALESCE(sum(requested), 0) FROM jobs")

    def finished_jobs(self):
        return sum(1 for _, _, total, done, failed in self.jobs() if done + failed == total)

    def all_jobs_finished(self):
        """There are jobs, and every unit of each is done or dead-lettered."""
        jobs = self.jobs()
        return bool(jobs) and all(done + failed == total for _, _, total, done, failed in jobs)

    def units_unaccounted(self):
        """Units neither done nor dead-lettered: lost, once nothing runs."""
        return sum(total - done - failed for _, _, total, done, failed in self.jobs())

    def units_in_flight(self):
        """Unfinished units whose message may still run: its last delivery
        did not end (running, or in a worker that died: RabbitMQ gives it
        back), ended in a retry (a copy waits in the delay queue), or never
        started (queued, or delivered to a worker and waiting in its
        prefetch: neither ready in the queue nor running). Only a unit whose
        last delivery ended "done" without finishing it (an error swallowed,
        the message acked) is lost rather than in flight; a dead-lettered one
        is in flight until DeadLetters has marked it failed."""
        return self._value(
            """
            WITH unfinished AS (
                SELECT j.id AS job_id, c.unit
                FROM jobs j CROSS JOIN LATERAL generate_series(0, j.units - 1) AS c(unit)
                WHERE j.status NOT IN ('failed', 'cancelled')  -- never queued, or called off: nothing will run
                  AND NOT EXISTS (SELECT 1 FROM job_units u WHERE u.job_id = j.id AND u.unit = c.unit
                                  AND u.status IN ('done', 'failed', 'cancelled'))
            ), last_delivery AS (
                SELECT DISTINCT ON (job_id, unit) job_id, unit, outcome
                FROM message_events WHERE job_id IS NOT NULL
                ORDER BY job_id, unit, started DESC, id DESC
            )
            SELECT count(*) FROM unfinished LEFT JOIN last_delivery USING (job_id, unit)
            WHERE last_delivery.outcome IS DISTINCT FROM 'done'
            """
        )

    def followers_created(self, user_ids):
        return self._value("SELECT count(*) FROM subscriptions WHERE author_id = ANY(%s)", (list(user_ids),))

    def followers_without_subscription(self):
        """Users made by add-followers (``login_#i``) that no one follows:
        a follower committed without its subscription would be one."""
        return self._value(
            """
            SELECT count(*) FROM users u
            WHERE u.login LIKE '%%\\_#%%'
              AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.follower_id = u.id)
            """
        )

    def order_inversions(self, user_ids):
        """Adjacent followers of one user (by index i in ``login_#i``) whose
        rows were created in the opposite order (a lower id for i + 1)."""
        return self._value(
            """
            SELECT count(*) FROM (
                SELECT u.id < lag(u.id) OVER (
                           PARTITION BY s.author_id, split_part(u.login, '_#', 1)
                           ORDER BY split_part(u.login, '_#', 2)::int) AS inverted
                FROM subscriptions s JOIN users u ON u.id = s.follower_id
                WHERE s.author_id = ANY(%s)
            ) pairs WHERE inverted
            """,
            (list(user_ids),),
        )

    # --- Events ----------------------------------------------------------

    def events(self):
        return self._rows(
            """
            SELECT message_id, job_id, unit, user_id, pid, thread, redelivered,
                   extract(epoch FROM started), extract(epoch FROM ended), outcome, error
            FROM message_events ORDER BY started
            """
        )

    def unexplained_runs(self):
        """Runs of a unit beyond its first that are not redeliveries: a unit
        sent twice (a chain that forked), not a unit that came back because
        its worker died under it."""
        return self._value(
            """
            SELECT COALESCE(sum(runs - 1), 0) FROM (
                SELECT count(*) AS runs FROM message_events
                WHERE actor_name = 'add_followers' AND job_id IS NOT NULL AND redelivered = 0 AND outcome = 'done'
                GROUP BY job_id, unit
            ) AS per_unit WHERE runs > 1
            """
        )

    def failed_runs(self):
        """Runs that raised and were retried."""
        return self._value("SELECT count(*) FROM message_events WHERE outcome = 'retrying'")

    def unique_violations(self):
        return self._value(
            "SELECT count(*) FROM message_events WHERE error ILIKE '%%unique%%' OR error ILIKE '%%IntegrityError%%'"
        )

    def worker_pids(self):
        return self._value("SELECT count(DISTINCT pid) FROM message_events WHERE outcome = 'done'")

    def seconds_since_activity(self):
        """Seconds since any delivery last started or ended (None: never)."""
        return self._value(
            "SELECT extract(epoch FROM now() - max(greatest(started, coalesce(ended, started)))) FROM message_events"
        )

    def running_now(self):
        """Deliveries still running in a live worker."""
        rows = self._rows("SELECT DISTINCT pid FROM message_events WHERE outcome = 'running'")
        return sum(1 for (pid,) in rows if _alive(pid))

    def worker_crashes(self):
        """Worker processes that died in the middle of a message."""
        rows = self._rows("SELECT DISTINCT pid FROM message_events WHERE outcome = 'running'")
        return sum(1 for (pid,) in rows if not _alive(pid))

    # --- Queues ----------------------------------------------------------

    def ready(self):
        """Messages waiting: in the outbox, in the work queue and in the
        retry-delay queue."""
        name = self.stack.queue_name
        return self.outbox_pending() + queue_depth(name) + queue_depth(f"{name}.DQ")

    def outbox_pending(self):
        return self._value("SELECT count(*) FROM outbox")

    def dead_lettered(self):
        return queue_depth(f"{self.stack.queue_name}.XQ")

    def drained(self, settle):
        """Nothing left to do: nothing queued, nothing running, no unit of
        work in flight, and, unless every job has finished, no activity for
        ``settle`` seconds (for messages that are no unit, such as bad ones).
        Work acked without its effect is lost, not pending.

        Quiet alone would not do: a message delivered to a worker but not
        started yet (a redelivery in the prefetch of a worker that is being
        stopped or is busy) is neither ready in the queue nor running, and
        RabbitMQ's own count of unacknowledged messages (management API) lags
        by seconds. The units' last deliveries say it exactly."""
        if self.ready() or self.running_now() or self.units_in_flight():
            return False
        if self.all_jobs_finished():
            return True
        idle = self.seconds_since_activity()
        return idle is None or float(idle) >= settle
