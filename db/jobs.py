"""Jobs, with the statements that create, chain, cancel and report them
(those that read many jobs at once: db/job_listing.py).

A job is one asynchronous add-followers request, cut into ``units`` units of
at most ``unit_size`` followers; a unit is what one message asks for
(``db.units``). Every message a statement decides to send (a new job's
units, an ordered unit's successor) is written to the outbox by that same
statement, so it is committed with what calls for it, or not at all.
"""

from peewee import SQL, AutoField, BooleanField, CharField, ForeignKeyField, IntegerField, TextField, fn

from .database import Prepared, database
from .job_listing import UNIT_COUNTS_SQL, JobListing, status_sql
from .models import BaseModel, User
from .outbox import Outbox


def next_ordered_job_sql(user, after):
    """The id of the user's ordered job that runs next, as SQL: the first
    after job ``after`` that is not through (its last unit done), failed,
    cancelled or empty; NULL if none. The one definition of "which job of
    this user runs next", for the API that creates a job and for the unit
    that ends one. Both run it under the user's ordering lock
    (``User.lock_for_ordering``), so a job is started once, by one of them."""
    return f"""(
        SELECT n.id FROM jobs AS n
        WHERE n.user_id = {user} AND n.ordered AND n.id > {after} AND n.units > 0
          AND n.status NOT IN ('failed', 'cancelled')
          AND NOT EXISTS (
              SELECT 1 FROM job_units AS last
              WHERE last.job_id = n.id AND last.unit = n.units - 1 AND last.status = 'done'
          )
        ORDER BY n.id LIMIT 1
    )"""


def unit_kwargs(job, unit):
    return f"jsonb_build_object('job_id', {job}, 'unit', {unit})"


# The API's one statement per async request (``Job.create_with_units``),
# prepared once per connection: PostgreSQL spent ~340 us of CPU parsing,
# planning and running it, ~170 us running it prepared (3,000 runs each on
# one connection, docs/benchmark.md).
_CREATE_WITH_UNITS = Prepared(
    "create_job_with_units",
    f"""
    WITH job AS (
        INSERT INTO jobs (user_id, followers_login, requested, unit_size, units, ordered, enqueued, status)
        SELECT id, %(login)s, %(requested)s, %(size)s, %(units)s, FALSE, %(units)s <= %(inline)s, 'queued'
        FROM users WHERE id = %(user)s
        RETURNING *
    ), messages AS (
        INSERT INTO outbox (queue_name, actor_name, kwargs)
        SELECT %(queue)s, 'add_followers', {unit_kwargs("job.id", "u")}
        FROM job, generate_series(0, job.units - 1) AS u WHERE job.enqueued
        UNION ALL
        SELECT %(queue)s, 'split_job', jsonb_build_object('job_id', job.id) FROM job WHERE NOT job.enqueued
        RETURNING 1
    )
    SELECT job.id FROM job
    """,
    user="integer", login="text", requested="integer", size="integer", units="integer", inline="integer",
    queue="text",
)


#: The jobs ``Job.prune`` deletes (``j``; parameter ``days``): finished
#: (marked done, cancelled or failed in its column, or every unit done or
#: failed), unchanged for ``days`` days (a replay touches its unit), with
#: no dead letter recorded and no message in the outbox: a message that
#: still comes needs its job. An ordered job also stays while the user's next
#: ordered job has not started: a unit of it that RabbitMQ still holds (a
#: cancelled job's, after days of workers down) passes the user's turn on
#: when it comes, and would find no job to pass it from.
_PRUNABLE = f"""(j.status IN ('done', 'cancelled', 'failed')
         OR (SELECT count(*) FROM job_units WHERE job_id = j.id) >= j.units)
    AND greatest(j.updated_at, (SELECT max(updated_at) FROM job_units WHERE job_id = j.id))
        < now() - make_interval(days => %(days)s)
    AND NOT EXISTS (SELECT 1 FROM dead_letters WHERE dead_letters.job_id = j.id)
    AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.kwargs ->> 'job_id' = j.id::text)
    AND NOT (j.ordered AND EXISTS (
        SELECT 1 FROM jobs AS next WHERE next.id = {next_ordered_job_sql("j.user_id", "j.id")}
          AND NOT EXISTS (SELECT 1 FROM job_units WHERE job_units.job_id = next.id)))"""


class Job(JobListing, BaseModel):
    """``status`` holds what the API and the operator decide (queued,
    cancelled, failed by a purge); running, done and failed are derived
    from the units' rows (``status_sql``), so that no worker has to update
    this hot row. A job seen done is marked so afterwards (``settle``), so
    that the readers of jobs in flight skip it."""

    id = AutoField()  # as Peewee would add it, written out for type checkers
    user = ForeignKeyField(User, on_delete="CASCADE")
    user_id: int  # the foreign key's raw id, which Peewee adds
    followers_login = CharField(max_length=32)
    requested = IntegerField()
    unit_size = IntegerField()
    units = IntegerField()
    status = CharField(max_length=16, default="queued")
    # Units of an ordered job run one after another, and after the user's
    # earlier ordered jobs (settings.ORDERED_PER_USER when it was created).
    ordered = BooleanField(default=False)
    # Its units are in the outbox (or sent): a large job's split_job sets it
    # when it writes them, so a split_job delivered twice writes them once.
    enqueued = BooleanField(default=True)
    error = TextField(null=True)
    # An ordered job cancelled hands its user's turn on once, whoever comes
    # first: the cancel (a dead letter held the chain), a unit of the job
    # that comes round, or the purge of a unit's dead letter.
    turn_passed = BooleanField(default=False, constraints=[SQL("DEFAULT FALSE")])  # raw INSERTs leave it out
    # Hashed once per job by the first unit that needs it (not by the API,
    # which would then spend ~50 ms of CPU on every request).
    password_hash = CharField(max_length=160, null=True)

    class Meta:
        table_name = "jobs"

    @classmethod
    def create_with_units(cls, user_id, *, queue, followers_login, requested, unit_size, units, inline_units):
        """Insert a job for a user that exists and write its messages to the
        outbox, in ONE statement (one round trip, atomic on its own): its
        units if there are at most ``inline_units``, else one ``split_job``.
        None if the user does not exist.

        Only the new id comes back; the rest of the Job is what was written
        (but for the timestamps): reading back every column and building a
        Model from it cost ~20-40 us of CPU per request, 10-17% of the
        app's own (docs/benchmark.md)."""
        row = database.execute_prepared(
            _CREATE_WITH_UNITS,
            {"user": user_id, "login": followers_login, "requested": requested, "size": unit_size,
             "units": units, "inline": inline_units, "queue": queue},
        ).fetchone()
        if row is None:
            return None
        return cls(id=row[0], user=user_id, followers_login=followers_login, requested=requested,
                   unit_size=unit_size, units=units, ordered=False, enqueued=units <= inline_units, status="queued")

    @classmethod
    def create_ordered(cls, user, *, queue, followers_login, requested, unit_size, units):
        """Insert an ordered job and, if no job of the user is ahead of it,
        write its first unit to the outbox; otherwise the unit that ends the
        job ahead of it will. The caller holds the user's ordering lock."""
        return cls._one(
            f"""
                WITH job AS (
                    INSERT INTO jobs (user_id, followers_login, requested, unit_size, units, ordered, enqueued, status)
                    VALUES (%(user)s, %(login)s, %(requested)s, %(size)s, %(units)s, TRUE, TRUE, 'queued')
                    RETURNING *
                ), first_unit AS (
                    INSERT INTO outbox (queue_name, actor_name, kwargs)
                    SELECT %(queue)s, 'add_followers', {unit_kwargs("job.id", "0")} FROM job
                    -- The new job is not visible to this statement: NULL means none is ahead of it.
                    WHERE job.units > 0 AND {next_ordered_job_sql("job.user_id", "0")} IS NULL
                    RETURNING 1
                )
                SELECT job.* FROM job
                """,
            {"user": user.id, "login": followers_login, "requested": requested, "size": unit_size,
             "units": units, "queue": queue},
        )

    @classmethod
    def _one(cls, sql, params):
        """The job a statement returns (``SELECT job.*``), or None."""
        cursor = database.execute_sql(sql, params)
        row = cursor.fetchone()
        return None if row is None else cls(**dict(zip((column[0] for column in cursor.description), row, strict=True)))

    @classmethod
    def split_failed(cls, job_id, error):
        """Its ``split_job`` message was dead-lettered: no unit of it is
        written, and none will be unless that dead letter is replayed. The
        job shows failed, with why (``error``). Nothing for a job whose
        units are written, or that is cancelled."""
        cls.update(status="failed", error=error, updated_at=fn.now()).where(
            (cls.id == job_id) & ~cls.enqueued & (cls.status == "queued")
        ).execute()

    @classmethod
    def split_replayed(cls, job_id):
        """Its ``split_job`` dead letter is replayed: queued again, its error
        gone (``split_failed`` undone, in the replay's transaction)."""
        cls.update(status="queued", error=None, updated_at=fn.now()).where(
            (cls.id == job_id) & ~cls.enqueued & (cls.status == "failed")
        ).execute()

    @classmethod
    def enqueue_units(cls, job_id, *, queue):
        """Write the units of a job that was too large to write inside the
        request (``split_job``), once. Returns (job exists, units written)."""
        cursor = database.execute_sql(
            f"""
            WITH job AS (
                UPDATE jobs SET enqueued = TRUE, updated_at = now()
                WHERE id = %(job)s AND NOT enqueued AND status <> 'cancelled'
                RETURNING id, units
            ), messages AS (
                {Outbox.rows_sql("add_followers", unit_kwargs("job.id", "u"),
                                 "job, generate_series(0, job.units - 1) AS u")}
            )
            SELECT EXISTS (SELECT 1 FROM jobs WHERE id = %(job)s), (SELECT count(*) FROM messages)
            """,
            {"job": job_id, "queue": queue},
        )
        return cursor.fetchone()

    def unit_bounds(self, unit):
        """The follower indexes [start, stop) of one unit."""
        start = unit * self.unit_size
        return start, min(start + self.unit_size, self.requested)

    def progress(self):
        """The units' counts and the job's status (``status_sql``), in one query."""
        cursor = database.execute_sql(
            f"""
            SELECT u.done, u.failed, u.created, u.skipped, u.updated_at, {status_sql("j", "u.done", "u.failed")}
            FROM jobs AS j, {UNIT_COUNTS_SQL}
            WHERE j.id = %s
            """,
            (self.id,),
        )
        keys = ("done", "failed", "created", "skipped", "updated_at", "status")
        return dict(zip(keys, cursor.fetchone(), strict=True))

    def unit_errors(self, limit=20):
        from .units import JobUnit  # db.units imports this module: JobUnit's rows point at a Job

        query = (
            JobUnit.select(JobUnit.unit, JobUnit.error)
            .where((JobUnit.job == self.id) & (JobUnit.status == "failed"))
            .order_by(JobUnit.unit)
            .limit(limit)
        )
        return [f"unit {row.unit}: {row.error}" for row in query]

    def to_dict(self, *, progress=None, unit_errors=None):
        """The job as the API shows it; ``progress`` and ``unit_errors``
        when the caller fetched them already (a page of jobs)."""
        progress = progress or self.progress()
        errors = ([self.error] if self.error else []) + (self.unit_errors() if unit_errors is None else unit_errors)
        updated_at = max(filter(None, [self.updated_at, progress["updated_at"]]))
        return {
            "id": self.id,
            "userId": self.user_id,
            "followersLogin": self.followers_login,
            "requested": self.requested,
            "created": progress["created"],
            "skipped": progress["skipped"],
            "status": progress["status"],
            "cancellable": self.cancellable(progress["status"]),
            # The API calls a job's units "messages": one message each.
            "messages": {"total": self.units, "done": progress["done"], "failed": progress["failed"]},
            "errors": errors,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": updated_at.isoformat(),
        }

    # --- Operations: the console and its API ------------------------------

    @classmethod
    def cancel(cls, job_id):
        """Mark the job cancelled, in one statement that leaves a finished
        job alone: failed to publish, every unit done, or every unit done or
        dead-lettered, unless it is ordered (``cancellable``). True if this
        call cancelled it. From then on no unit of it applies:
        ``JobUnit.apply`` checks the status in its own statement, under a
        share lock of the row, so this waits for a unit under way."""
        cursor = database.execute_sql(
            """
            UPDATE jobs SET status = 'cancelled', updated_at = now()
            FROM (SELECT count(*) FILTER (WHERE status = 'done') AS done,
                         count(*) FILTER (WHERE status = 'failed') AS failed
                  FROM job_units WHERE job_id = %(job)s) AS u
            WHERE id = %(job)s AND status NOT IN ('failed', 'cancelled')
              AND units > u.done AND (ordered OR units > u.done + u.failed)
            RETURNING id
            """,
            {"job": job_id},
        )
        return cursor.fetchone() is not None

    def cancellable(self, status):
        """Whether ``cancel`` would cancel the job, whose derived status is
        ``status``: while it is queued or running, or, ordered, failed by a
        dead letter, which holds its user's next ordered jobs until it is
        replayed or purged, or the job cancelled (its units run one after
        another, so the first one not done is that dead letter). The rule of ``cancel``'s
        statement, read from what the job's page has fetched already."""
        return status in ("queued", "running") or (status == "failed" and self.ordered and self.status != "failed")

    @classmethod
    def prune(cls, *, days, limit=5_000):
        """Delete, with their units, up to ``limit`` jobs (oldest first)
        finished (done, failed or cancelled) whose last change
        (``updatedAt``: the job's row or its latest unit) is more than
        ``days`` days old (``_PRUNABLE``). Jobs in flight stay, and so does
        a job a message may still come for: a dead letter recorded (a
        replay needs the job), a message in the outbox, a unit replayed
        within ``days`` days, an ordered job whose user's next ordered job
        has not started. A message of a deleted job that comes all the same
        (one RabbitMQ held for longer) is dead-lettered as a unit of a job
        that does not exist. Returns how many it deleted; rows another
        transaction holds are left to the next call."""
        cursor = database.execute_sql(
            f"""
            DELETE FROM jobs WHERE id = ANY(ARRAY(
                SELECT id FROM jobs AS j WHERE {_PRUNABLE}
                ORDER BY id LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED
            ))
            """,
            {"days": days, "limit": limit},
        )
        return cursor.rowcount

    @classmethod
    def prunable(cls, *, days):
        """How many jobs ``prune`` would delete, in all."""
        return database.execute_sql(f"SELECT count(*) FROM jobs AS j WHERE {_PRUNABLE}", {"days": days}).fetchone()[0]

    def unit_rows(self, limit=500):
        """The job's finished units (done, dead-lettered or cancelled), in order."""
        from .units import JobUnit  # db.units imports this module: JobUnit's rows point at a Job

        return list(JobUnit.select().where(JobUnit.job == self.id).order_by(JobUnit.unit).limit(limit))
