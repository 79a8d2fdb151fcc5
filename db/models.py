"""The tables, each model with the queries that belong to it.

Uniqueness is the database's job (a unique login, one subscription per pair,
one row per unit of work), never a check-then-insert in Python: two workers
racing on the same rows must both end up right.
"""

import datetime

from peewee import (
    SQL,
    BooleanField,
    CharField,
    CompositeKey,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
    fn,
)

from .database import database


def now():
    return datetime.datetime.now(datetime.timezone.utc)


class TimestampTZField(DateTimeField):
    field_type = "TIMESTAMPTZ"


class BaseModel(Model):
    """Stamps ``created_at`` on insert and ``updated_at`` on every update,
    as the original's Timestampable did. The column defaults cover rows that
    bulk SQL inserts without going through a model instance."""

    created_at = TimestampTZField(default=now, constraints=[SQL("DEFAULT now()")])
    updated_at = TimestampTZField(default=now, constraints=[SQL("DEFAULT now()")])

    class Meta:
        database = database
        legacy_table_names = False

    def save(self, *args, **kwargs):
        if self._pk is not None:
            self.updated_at = now()
        return super().save(*args, **kwargs)

    @classmethod
    def update(cls, __data=None, **update):
        # Every UPDATE issued through a model stamps the row, so no caller can forget.
        query = super().update(__data, **update)
        query._update.setdefault(cls.updated_at, fn.now())
        return query


class User(BaseModel):
    login = CharField(max_length=64, unique=True)
    password = CharField(max_length=160)  # passwords.hash_password(), never plain text
    age = IntegerField()
    is_active = BooleanField(default=True)

    class Meta:
        table_name = "users"

    def to_dict(self):
        return {
            "id": self.id,
            "login": self.login,
            "age": self.age,
            "isActive": self.is_active,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }

    def followers(self):
        """The users subscribed to this one, oldest subscription first."""
        return (
            User.select()
            .join(Subscription, on=(Subscription.follower == User.id))
            .where(Subscription.author == self)
            .order_by(Subscription.id)
        )

    @classmethod
    def lock_for_ordering(cls, user_id):
        """Serialize, until the transaction ends, whoever decides which of the
        user's ordered jobs runs next (an advisory lock: it does not block
        the foreign-key locks that bulk inserts take on the user's row)."""
        database.execute_sql("SELECT pg_advisory_xact_lock(1, %s)", (user_id,))

    @classmethod
    def add_followers(cls, author_id, followers_login, start, stop, password_hash, *, skip_existing=True):
        """Create users ``{followers_login}_#{i}`` for i in [start, stop) and
        subscribe each to the author, in one statement: PostgreSQL generates
        the rows itself, so 10,000 followers cost one round trip, not 30,000.

        A login that already exists is skipped and not subscribed. Returns
        how many were created. ``skip_existing=False`` is the lab's naive
        mode: an existing login raises a unique violation, as in the original.
        """
        if stop <= start:
            return 0
        ctes = followers_ctes(password="%(password)s", skip_existing=skip_existing)
        cursor = database.execute_sql(
            f"WITH {ctes} SELECT count(*) FROM subscribed",
            {
                "prefix": f"{followers_login}_#",
                "password": password_hash,
                "start": start,
                "stop": stop,
                "author": author_id,
            },
        )
        return cursor.fetchone()[0]


def followers_ctes(*, password, source="", skip_existing=True):
    """The two data-modifying CTEs that add followers [start, stop) to an
    author: ``new_followers`` (users made) and ``subscribed``. Rows go in
    in order of i, so two transactions on overlapping ranges lock in the same
    order and cannot deadlock. ``password`` is an SQL expression; ``source``
    a FROM item it may refer to."""
    on_conflict = "ON CONFLICT (login) DO NOTHING" if skip_existing else ""
    return f"""
        new_followers AS (
            INSERT INTO users (login, password, age, is_active)
            SELECT %(prefix)s || i, {password}, i, TRUE
            FROM {source + ", " if source else ""}generate_series(%(start)s, %(stop)s - 1) AS i
            ORDER BY i
            {on_conflict}
            RETURNING id
        ), subscribed AS (
            INSERT INTO subscriptions (author_id, follower_id)
            SELECT %(author)s, id FROM new_followers ORDER BY id
            RETURNING 1
        )"""


class Subscription(BaseModel):
    # The unique (author, follower) index serves lookups by author: a second
    # index on author alone would only slow every insert down.
    author = ForeignKeyField(User, on_delete="CASCADE", index=False)
    follower = ForeignKeyField(User, on_delete="CASCADE")

    class Meta:
        table_name = "subscriptions"
        indexes = ((("author", "follower"), True),)

    def to_dict(self):
        return {
            "id": self.id,
            "authorId": self.author_id,
            "followerId": self.follower_id,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }


#: A job's status as ``Job.to_dict`` derives it, in SQL over ``j`` (a jobs
#: row) and ``u`` (its units: ``finished``, done or failed, and ``failed``).
DERIVED_STATUS = """CASE
    WHEN j.status = 'cancelled' THEN 'cancelled'
    WHEN j.status = 'failed' OR (COALESCE(u.finished, 0) = j.messages AND u.failed > 0) THEN 'failed'
    WHEN COALESCE(u.finished, 0) = j.messages THEN 'done'
    WHEN u.finished > 0 THEN 'running'
    ELSE j.status
END"""


class Job(BaseModel):
    """One asynchronous add-followers request, split into ``messages`` units
    of at most ``chunk_size`` followers. ``status`` holds what only the API
    knows (queued, failed to publish, or cancelled); running and done are
    derived from the units, so that no worker has to update this hot row."""

    user = ForeignKeyField(User, on_delete="CASCADE")
    followers_login = CharField(max_length=32)
    requested = IntegerField()
    chunk_size = IntegerField()
    messages = IntegerField()
    status = CharField(max_length=16, default="queued")
    # Units of an ordered job run one after another, and after the user's
    # earlier ordered jobs (settings.ORDERED_PER_USER when it was created).
    ordered = BooleanField(default=False)
    error = TextField(null=True)
    # Hashed once per job by the first unit that needs it (not by the API,
    # which would then spend ~50 ms of CPU on every request).
    password_hash = CharField(max_length=160, null=True)

    class Meta:
        table_name = "jobs"

    @classmethod
    def create_for_user(cls, user_id, *, followers_login, requested, chunk_size, messages, ordered):
        """Insert a job for a user that exists, in one statement (the user's
        check included); None if the user does not exist."""
        rows = list(
            cls.raw(
                """
                INSERT INTO jobs (user_id, followers_login, requested, chunk_size, messages, ordered, status)
                SELECT id, %s, %s, %s, %s, %s, 'queued' FROM users WHERE id = %s
                RETURNING *
                """,
                followers_login, requested, chunk_size, messages, ordered, user_id,
            )
        )
        return rows[0] if rows else None

    def has_unfinished_predecessor(self):
        """Is an earlier ordered job of the same user still short of its last
        unit? (Ordered units run one after another, so the last one done
        means the job is.)"""
        earlier = Job.alias()
        last_done = JobUnit.select().where(
            (JobUnit.job == earlier.id) & (JobUnit.chunk == earlier.messages - 1) & (JobUnit.status == "done")
        )
        return (
            earlier.select()
            .where(
                (earlier.user == self.user_id)
                & earlier.ordered
                & (earlier.id < self.id)
                & (earlier.messages > 0)
                & (earlier.status != "failed")
                & ~fn.EXISTS(last_done)
            )
            .exists()
        )

    def next_ordered_job(self):
        return (
            Job.select()
            .where((Job.user == self.user_id) & Job.ordered & (Job.id > self.id) & (Job.messages > 0))
            .order_by(Job.id)
            .first()
        )

    def chunk_bounds(self, chunk):
        """The follower indexes [start, stop) of one unit."""
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, self.requested)

    def progress(self):
        return (
            JobUnit.select(
                fn.COUNT(SQL("*")).filter(JobUnit.status == "done").alias("done"),
                fn.COUNT(SQL("*")).filter(JobUnit.status == "failed").alias("failed"),
                fn.COALESCE(fn.SUM(JobUnit.created), 0).alias("created"),
                fn.COALESCE(fn.SUM(JobUnit.skipped), 0).alias("skipped"),
                fn.MAX(JobUnit.updated_at).alias("updated_at"),
            )
            .where(JobUnit.job == self.id)
            .dicts()
            .get()
        )

    def unit_errors(self, limit=20):
        query = (
            JobUnit.select(JobUnit.chunk, JobUnit.error)
            .where((JobUnit.job == self.id) & (JobUnit.status == "failed"))
            .order_by(JobUnit.chunk)
            .limit(limit)
        )
        return [f"unit {unit.chunk}: {unit.error}" for unit in query]

    def to_dict(self, *, progress=None, unit_errors=None):
        """The job as the API shows it; ``progress`` and ``unit_errors``
        when the caller fetched them already (a page of jobs)."""
        progress = progress or self.progress()
        finished = progress["done"] + progress["failed"]
        if self.status == "cancelled":
            status = "cancelled"
        elif self.status == "failed" or (finished == self.messages and progress["failed"]):
            status = "failed"
        elif finished == self.messages:
            status = "done"
        elif finished:
            status = "running"
        else:
            status = self.status
        errors = ([self.error] if self.error else []) + (self.unit_errors() if unit_errors is None else unit_errors)
        updated_at = max(filter(None, [self.updated_at, progress["updated_at"]]))
        return {
            "id": self.id,
            "userId": self.user_id,
            "followersLogin": self.followers_login,
            "requested": self.requested,
            "created": progress["created"],
            "skipped": progress["skipped"],
            "status": status,
            "messages": {
                "total": self.messages,
                "done": progress["done"],
                "failed": progress["failed"],
            },
            "errors": errors,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": updated_at.isoformat(),
        }

    @classmethod
    def count_by_status(cls):
        """{status: jobs}, each job's status derived as ``to_dict`` does, in
        one aggregate query (for the API's /metrics)."""
        cursor = database.execute_sql(
            f"""
            SELECT status, count(*) FROM (
                SELECT {DERIVED_STATUS} AS status
                FROM jobs AS j
                LEFT JOIN (
                    SELECT job_id, count(*) AS finished, count(*) FILTER (WHERE status = 'failed') AS failed
                    FROM job_units GROUP BY job_id
                ) AS u ON u.job_id = j.id
            ) AS derived
            GROUP BY status
            """
        )
        return dict(cursor.fetchall())

    # --- Operations: the console and its API ------------------------------

    @classmethod
    def cancel(cls, job_id):
        """Mark the job cancelled, in one statement that leaves a finished
        job alone (failed to publish, or every unit done or dead-lettered).
        True if this call cancelled it. From then on no unit of it applies
        (``JobUnit.apply`` checks the status in its own statement)."""
        cursor = database.execute_sql(
            """
            UPDATE jobs SET status = 'cancelled', updated_at = now()
            WHERE id = %(job)s AND status NOT IN ('failed', 'cancelled')
              AND messages > (SELECT count(*) FROM job_units WHERE job_id = %(job)s)
            RETURNING id
            """,
            {"job": job_id},
        )
        return cursor.fetchone() is not None

    @classmethod
    def page(cls, *, status=None, user_id=None, before=None, limit=50):
        """Jobs newest first, with ids below ``before`` (keyset pagination:
        a page costs the same however deep), of one user and of one derived
        status if given. Returns [(job, progress, unit errors)] in two
        round trips whatever the page's size."""
        jobs = list(
            cls.raw(
                f"""
                SELECT j.*, u.done, u.failed, u.created AS units_created, u.skipped AS units_skipped,
                       u.updated_at AS units_updated_at
                FROM jobs AS j
                CROSS JOIN LATERAL (
                    SELECT count(*) AS finished, count(*) FILTER (WHERE status = 'done') AS done,
                           count(*) FILTER (WHERE status = 'failed') AS failed,
                           COALESCE(sum(created), 0) AS created, COALESCE(sum(skipped), 0) AS skipped,
                           max(updated_at) AS updated_at
                    FROM job_units WHERE job_id = j.id
                ) AS u
                WHERE (%s::int IS NULL OR j.id < %s) AND (%s::int IS NULL OR j.user_id = %s)
                  AND (%s::text IS NULL OR {DERIVED_STATUS} = %s)
                ORDER BY j.id DESC
                LIMIT %s
                """,
                before, before, user_id, user_id, status, status, limit,
            )
        )
        errors = {job.id: [] for job in jobs}
        failing = [job.id for job in jobs if job.failed]
        if failing:
            cursor = database.execute_sql(
                """
                SELECT job_id, chunk, error FROM (
                    SELECT job_id, chunk, error, row_number() OVER (PARTITION BY job_id ORDER BY chunk) AS n
                    FROM job_units WHERE job_id = ANY(%s) AND status = 'failed'
                ) AS failed WHERE n <= 20
                ORDER BY job_id, chunk
                """,
                (failing,),
            )
            for job_id, chunk, error in cursor.fetchall():
                errors[job_id].append(f"unit {chunk}: {error}")
        return [
            (job, {"done": job.done, "failed": job.failed, "created": job.units_created,
                   "skipped": job.units_skipped, "updated_at": job.units_updated_at}, errors[job.id])
            for job in jobs
        ]

    def units(self, limit=500):
        """The job's finished units (done or dead-lettered), in order."""
        return list(JobUnit.select().where(JobUnit.job == self.id).order_by(JobUnit.chunk).limit(limit))


class JobUnit(BaseModel):
    """The "done" mark of one unit of work (job + chunk), committed in the
    same transaction as its followers: the idempotency key of the whole
    pipeline. A redelivered or re-published unit finds its row and commits
    nothing twice."""

    # The primary key (job, chunk) already indexes job_id.
    job = ForeignKeyField(Job, on_delete="CASCADE", index=False)
    chunk = IntegerField()
    status = CharField(max_length=16)  # done | failed (dead-lettered)
    created = IntegerField(default=0)
    skipped = IntegerField(default=0)
    error = TextField(null=True)

    class Meta:
        table_name = "job_units"
        primary_key = CompositeKey("job", "chunk")

    @classmethod
    def apply(cls, *, job_id, chunk, author_id, followers_login, start, stop, ordered):
        """Add one unit's followers and mark the unit done, in ONE statement
        (atomic on its own, one round trip): exactly once, because a follower
        that exists is skipped and a unit done already is not marked again.

        The statement checks the unit against its job (user, login, bounds,
        ordering) and takes the job's password hash. Returns (job matched,
        created or None if the unit was done already).
        """
        ctes = followers_ctes(password="job.password_hash", source="job")
        cursor = database.execute_sql(
            f"""
            WITH job AS (
                SELECT id, password_hash FROM jobs
                WHERE id = %(job)s AND user_id = %(author)s AND followers_login = %(login)s
                  AND ordered = %(ordered)s AND %(chunk)s < messages
                  AND %(start)s = %(chunk)s * chunk_size AND %(stop)s = LEAST(%(start)s + chunk_size, requested)
                  AND password_hash IS NOT NULL AND status <> 'cancelled'
            ), {ctes}, unit AS (
                INSERT INTO job_units (job_id, chunk, status, created, skipped)
                SELECT job.id, %(chunk)s, 'done', made.n, %(stop)s - %(start)s - made.n
                FROM job, (SELECT count(*) AS n FROM subscribed) AS made
                ON CONFLICT (job_id, chunk) DO UPDATE
                    SET status = 'done', error = NULL, created = EXCLUDED.created,
                        skipped = EXCLUDED.skipped, updated_at = now()
                    WHERE job_units.status = 'failed'  -- a replayed dead letter
                RETURNING created
            )
            SELECT (SELECT count(*) FROM job), (SELECT created FROM unit)
            """,
            {
                "job": job_id,
                "chunk": chunk,
                "author": author_id,
                "login": followers_login,
                "prefix": f"{followers_login}_#",
                "start": start,
                "stop": stop,
                "ordered": ordered,
            },
        )
        matched, created = cursor.fetchone()
        return bool(matched), created

    @classmethod
    def claim(cls, job_id, chunk):
        """Mark the unit done inside the caller's transaction; True if this
        transaction did, False if it was done already. A concurrent duplicate
        waits on the primary key until we commit, then gets False. A unit
        dead-lettered earlier (failed) may be claimed again by a replay."""
        query = (
            cls.insert(job=job_id, chunk=chunk, status="done")
            .on_conflict(
                conflict_target=[cls.job, cls.chunk],
                update={cls.status: "done", cls.error: None, cls.updated_at: fn.now()},
                where=(cls.status == "failed"),
            )
            .returning(cls.chunk)
        )
        return bool(list(query.execute()))

    @classmethod
    def record(cls, job_id, chunk, created, skipped):
        cls.update(created=created, skipped=skipped).where(
            (cls.job == job_id) & (cls.chunk == chunk)
        ).execute()

    @classmethod
    def mark_failed(cls, job_id, chunk, error):
        """Record a dead-lettered unit so the job shows it; never undoes a
        unit that is done."""
        (
            cls.insert(job=job_id, chunk=chunk, status="failed", error=error)
            .on_conflict(
                conflict_target=[cls.job, cls.chunk],
                update={cls.error: error, cls.updated_at: fn.now()},
                where=(cls.status == "failed"),
            )
            .execute()
        )


MODELS = [User, Subscription, Job, JobUnit]
