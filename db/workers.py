"""The worker processes as they report themselves: one row per process,
written by its heartbeat (``actors.heartbeat``), read by the API and the
console. ``created_at`` is when the process started, ``updated_at`` its
last heartbeat, both by PostgreSQL's clock, so hosts whose clocks disagree
are still judged alike."""

from peewee import AutoField, BigIntegerField, BooleanField, CharField, IntegerField

from .database import database
from .models import BaseModel

#: A process silent for this many of its own intervals shows as gone.
SILENT_INTERVALS = 3


class WorkerProcess(BaseModel):
    id = AutoField()  # as Peewee would add it, written out for type checkers
    host = CharField(max_length=255)
    pid = IntegerField()
    threads = IntegerField()
    busy = IntegerField(default=0)  # threads running a message at the last heartbeat
    units_done = BigIntegerField(default=0)
    interval_s = IntegerField()  # its heartbeat interval: each process is judged by its own
    stopped = BooleanField(default=False)  # said goodbye on a graceful shutdown

    class Meta:
        table_name = "worker_processes"

    @classmethod
    def start(cls, *, host, pid, threads, interval_s):
        """Record a process that just booted; returns its id."""
        return cls.insert(host=host, pid=pid, threads=threads, interval_s=interval_s).execute()

    @classmethod
    def beat(cls, process_id, *, busy, units_done, stopped=False):
        """A heartbeat (``update`` stamps ``updated_at``); False if the row is gone."""
        return bool(
            cls.update(busy=busy, units_done=units_done, stopped=stopped).where(cls.id == process_id).execute()
        )

    @classmethod
    def forget_silent(cls, seconds):
        """Delete the rows of processes silent for longer than ``seconds``."""
        database.execute_sql("DELETE FROM worker_processes WHERE updated_at < now() - %s * interval '1 second'",
                             (seconds,))

    @classmethod
    def recent(cls, seconds):
        """The processes heard from in the last ``seconds``, each with its
        ``state`` (alive, gone: silent for SILENT_INTERVALS intervals, or
        stopped) and ``silent_s``, alive ones first, newest first."""
        cursor = database.execute_sql(
            """
            SELECT * FROM (
                SELECT id, host, pid, threads, busy, units_done, interval_s, created_at, updated_at,
                       CASE WHEN stopped THEN 'stopped'
                            WHEN now() - updated_at > %s * interval_s * interval '1 second' THEN 'gone'
                            ELSE 'alive' END AS state,
                       GREATEST(EXTRACT(EPOCH FROM now() - updated_at)::float, 0) AS silent_s
                FROM worker_processes
                WHERE updated_at > now() - %s * interval '1 second'
            ) AS heard
            ORDER BY state = 'alive' DESC, created_at DESC, id DESC
            """,
            (SILENT_INTERVALS, seconds),
        )
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


WORKER_MODELS = [WorkerProcess]
