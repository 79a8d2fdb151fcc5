"""The tables, each model with the queries that belong to it.

Uniqueness is the database's job (a unique login, one subscription per pair,
one row per unit of work), never a check-then-insert in Python: two workers
racing on the same rows must both end up right.
"""

import datetime

from peewee import (
    SQL,
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    SmallIntegerField,
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
    def followers_page(cls, author_id, *, after=0, offset=0, limit):
        """Up to ``limit`` followers of an author, oldest subscription first,
        from the subscription after ``after`` (a keyset cursor: the last
        subscription id a client saw) and ``offset`` rows beyond it. Each
        user carries ``subscription_id``, the cursor that follows it.

        The (author_id, id) index finds the cursor at once, whatever its
        depth; the rows an offset skips are read from that index alone (no
        join, no heap while the visibility map is set), and only the page's
        own rows are joined to their subscriptions and users.
        """
        return list(
            cls.raw(
                """
                SELECT users.*, page.id AS subscription_id
                FROM (
                    SELECT id FROM subscriptions
                    WHERE author_id = %s AND id > %s
                    ORDER BY id OFFSET %s LIMIT %s
                ) AS page
                JOIN subscriptions ON subscriptions.id = page.id
                JOIN users ON users.id = subscriptions.follower_id
                ORDER BY page.id
                """,
                author_id, after, offset, limit,
            )
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
    """The data-modifying CTEs that add followers [start, stop) to an
    author: ``new_followers`` (users made), ``subscribed`` (one row, the
    author's id, per subscription made) and ``counted``, which adds them to
    the author's follower count in the same statement. Rows go in in order
    of i, so two transactions on overlapping ranges lock in the same order
    and cannot deadlock; the count comes last, so a statement holds its
    counter row only from its end to its commit. ``password`` is an SQL
    expression; ``source`` a FROM item it may refer to."""
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
            RETURNING author_id
        ), counted AS (
            {FollowerCount.upsert("SELECT author_id, count(*) FROM subscribed GROUP BY author_id")}
        )"""


class Subscription(BaseModel):
    # The unique (author, follower) index is the truth of who follows whom;
    # (author, id) reads an author's followers in subscription order from
    # any depth (User.followers_page). An index on author alone would be
    # redundant with both.
    author = ForeignKeyField(User, on_delete="CASCADE", index=False)
    follower = ForeignKeyField(User, on_delete="CASCADE")

    class Meta:
        table_name = "subscriptions"
        indexes = ((("author", "follower"), True), (("author", "id"), False))

    def to_dict(self):
        return {
            "id": self.id,
            "authorId": self.author_id,
            "followerId": self.follower_id,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }


class FollowerCount(Model):
    """An author's follower count, kept in up to ``SHARDS`` rows that add
    up to it, by the statements that add subscriptions, in their own
    transaction: ``followers_ctes`` (the sync path and every unit) and
    ``followers.subscribe``. Each statement adds to one shard drawn at
    random, so concurrent units of one author seldom wait on the same row
    (one row would serialise their commits). The unique subscription index
    stays the truth; this is its count, exact at every commit, read in one
    index range instead of counting a million rows per page.

    Nothing deletes a subscription today; whatever comes to do so must
    subtract here in its own statement (``add(author, -n)``).
    """

    # With 16 units in flight, a unit meets another on its shard 1 time in
    # 18 here (6 in 10 with 16 shards); an author's count is at most this many
    # rows, read in one index range. Trade-off measured in docs/benchmark.md.
    SHARDS = 256

    author = ForeignKeyField(User, on_delete="CASCADE", index=False)
    shard = SmallIntegerField()
    n = BigIntegerField()

    class Meta:
        database = database
        table_name = "follower_counts"
        primary_key = CompositeKey("author", "shard")

    @classmethod
    def upsert(cls, rows):
        """An INSERT that adds ``rows`` (an SQL SELECT of author_id, n) to
        the authors' counts, each on a shard drawn for this statement."""
        return f"""
            INSERT INTO follower_counts AS c (author_id, shard, n)
            SELECT author_id, floor(random() * {cls.SHARDS})::int, n FROM ({rows}) AS added (author_id, n)
            ON CONFLICT (author_id, shard) DO UPDATE SET n = c.n + EXCLUDED.n"""

    @classmethod
    def add(cls, author_id, n):
        """Add ``n`` to an author's count (inside the caller's transaction)."""
        database.execute_sql(cls.upsert("SELECT %s, %s"), (author_id, n))

    @classmethod
    def of_user(cls, user_id):
        """The user's follower count, or None if there is no such user (one
        statement for both, the API's check that the user exists)."""
        cursor = database.execute_sql(
            """
            SELECT (SELECT COALESCE(sum(n), 0) FROM follower_counts WHERE author_id = users.id)
            FROM users WHERE id = %s
            """,
            (user_id,),
        )
        row = cursor.fetchone()
        return None if row is None else int(row[0])

    #: Makes every author's count equal to its subscriptions: adds the
    #: difference, in one statement that reads both from one snapshot, so
    #: that units committing meanwhile (each adding its own rows and its
    #: own count) are neither lost nor counted twice.
    RECOUNT = """
        INSERT INTO follower_counts AS c (author_id, shard, n)
        SELECT author_id, 0, COALESCE(truth.n, 0) - COALESCE(counted.n, 0)
        FROM (SELECT author_id, count(*) AS n FROM subscriptions GROUP BY author_id) AS truth
        FULL JOIN (SELECT author_id, sum(n) AS n FROM follower_counts GROUP BY author_id) AS counted
            USING (author_id)
        WHERE COALESCE(truth.n, 0) <> COALESCE(counted.n, 0)
        ON CONFLICT (author_id, shard) DO UPDATE SET n = c.n + EXCLUDED.n"""


class Job(BaseModel):
    """One asynchronous add-followers request, split into ``messages`` units
    of at most ``chunk_size`` followers. ``status`` holds what only the API
    knows (queued, or failed to publish); running and done are derived from
    the units, so that no worker has to update this hot row."""

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

    def to_dict(self):
        progress = self.progress()
        finished = progress["done"] + progress["failed"]
        if self.status == "failed" or (finished == self.messages and progress["failed"]):
            status = "failed"
        elif finished == self.messages:
            status = "done"
        elif finished:
            status = "running"
        else:
            status = self.status
        errors = ([self.error] if self.error else []) + self.unit_errors()
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
            """
            SELECT status, count(*) FROM (
                SELECT CASE
                    WHEN j.status = 'failed' OR (COALESCE(u.finished, 0) = j.messages AND u.failed > 0)
                        THEN 'failed'
                    WHEN COALESCE(u.finished, 0) = j.messages THEN 'done'
                    WHEN u.finished > 0 THEN 'running'
                    ELSE j.status
                END AS status
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
                  AND password_hash IS NOT NULL
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


MODELS = [User, Subscription, FollowerCount, Job, JobUnit]
