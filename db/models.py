"""The tables, each model with the queries that belong to it.

Uniqueness is the database's job (a unique login, one subscription per pair,
one row per unit of work), never a check-then-insert in Python: two workers
racing on the same rows must both end up right.
"""

import datetime

from peewee import (
    SQL,
    AutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    IntegrityError,
    Model,
    SmallIntegerField,
    fn,
)

from .database import database


def now():
    return datetime.datetime.now(datetime.UTC)


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
        if self.get_id() is not None:
            self.updated_at = now()
        return super().save(*args, **kwargs)

    @classmethod
    def update(cls, __data=None, **update):
        # Every UPDATE issued through a model stamps the row, so no caller can
        # forget; one that sets updated_at itself keeps its own value.
        given = __data or {}
        if isinstance(given, dict) and "updated_at" not in {getattr(key, "name", key) for key in given} | update.keys():
            update["updated_at"] = fn.now()
        return super().update(__data, **update)


class User(BaseModel):
    id = AutoField()  # as Peewee would add it, written out for type checkers
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
        return list(cls.raw(FOLLOWERS_PAGE_SQL, author_id, after, author_id, offset, limit))

    @classmethod
    def lock_for_ordering(cls, user_id):
        """Serialize, until the transaction ends, whoever decides which of the
        user's ordered jobs runs next (an advisory lock: it does not block
        the foreign-key locks that bulk inserts take on the user's row)."""
        database.execute_sql("SELECT pg_advisory_xact_lock(1, %s)", (user_id,))

    @classmethod
    def add_followers(cls, author_id, followers_login, start, stop, password_hash):
        """Create users ``{followers_login}_#{i}`` for i in [start, stop) and
        subscribe each to the author, in one statement: PostgreSQL generates
        the rows itself, so 10,000 followers cost one round trip, not 30,000.

        A login that already exists is skipped and not subscribed. Returns
        how many were created.

        Logins are nearly always new: the statement first inserts without
        ``ON CONFLICT``, whose speculative insertion costs every row (two
        statements of 5,000 at once: 109 ms against 124, docs/benchmark.md).
        Only if a login exists does it run again, skipping those. A repeated
        request (a client's retry, or one that failed half-way: each range
        commits whole) has the range's first login: the first try then adds
        nothing, without an error. Another existing login fails it with a
        unique violation (in PostgreSQL's log); it is a transaction of its
        own, or a savepoint inside the caller's, so that undoes nothing else.
        """
        if stop <= start:
            return 0
        params = {
            "prefix": f"{followers_login}_#",
            "password": password_hash,
            "start": start,
            "stop": stop,
            "author": author_id,
        }
        try:
            with database.atomic():
                created = database.execute_sql(_ADD_NEW_FOLLOWERS, params).fetchone()[0]
            if created:
                return created
        except IntegrityError:
            pass  # any other integrity error (the author deleted meanwhile) is raised by the next one again
        return database.execute_sql(_ADD_FOLLOWERS_SKIPPING_EXISTING, params).fetchone()[0]


#: ``User.followers_page``'s statement; parameters: author, cursor, author,
#: offset, limit. The row comparison is what keeps a page on the (author_id,
#: id) index, scanned from the cursor to the author's last row. Written as
#: ``author_id = %s AND id > %s``, PostgreSQL 15 may scan the primary key
#: from the cursor instead and filter on the author: for an author whose
#: rows are followed by other authors' (added since the last ANALYZE), the
#: last page then read all of those to learn that no row follows it (the
#: bench's last page by cursor: 4.5 ms, then 26.8 and 49 ms once 100,000
#: more had come). With ``author_id = %s`` beside the row comparison it
#: starts the scan at the author's first entry rather than the cursor.
FOLLOWERS_PAGE_SQL = """
    SELECT users.*, page.id AS subscription_id
    FROM (
        SELECT id FROM subscriptions
        WHERE (author_id, id) > (%s, %s) AND author_id <= %s
        ORDER BY author_id, id OFFSET %s LIMIT %s
    ) AS page
    JOIN subscriptions ON subscriptions.id = page.id
    JOIN users ON users.id = subscriptions.follower_id
    ORDER BY page.id
"""


def followers_ctes(*, password, source="", prefix="%(prefix)s", start="%(start)s",
                   stop="%(stop)s", author="%(author)s", author_source=None, skip_existing=True):
    """The data-modifying CTEs that add followers [start, stop) to an
    author: ``new_followers`` (users made: their id and age, which is their
    index i), ``subscribed`` (one row, the author's id, per subscription
    made) and ``counted``, which adds them to the author's follower count in
    the same statement. Rows go in in order of i, so two transactions on
    overlapping ranges lock in the same order and cannot deadlock; the count
    comes last, so a statement holds its counter row only from its end to
    its commit. ``password``, ``prefix``, ``start``, ``stop`` and ``author``
    are SQL expressions (parameters by default); ``source`` a FROM item they
    may refer to, ``author_source`` the one ``author`` refers to if another
    (one row: a source of several ranges must not multiply the
    subscriptions). Without ``skip_existing`` the statement adds nothing
    if the range's first login exists (a repeated request: the caller runs
    it again skipping existing logins), and any other existing login fails
    it (a unique violation) instead of being skipped."""
    author_source = source if author_source is None else author_source
    on_conflict = "ON CONFLICT (login) DO NOTHING" if skip_existing else ""
    first_is_new = "" if skip_existing else f"WHERE NOT EXISTS (SELECT FROM users WHERE login = {prefix} || {start})"
    source = f"{source}, " if source else ""
    author_source = f"{author_source}, " if author_source else ""
    return f"""
        new_followers AS (
            INSERT INTO users (login, password, age, is_active)
            SELECT {prefix} || i, {password}, i, TRUE
            FROM {source}generate_series({start}, {stop} - 1) AS i
            {first_is_new}
            ORDER BY i
            {on_conflict}
            RETURNING id, age
        ), subscribed AS (
            INSERT INTO subscriptions (author_id, follower_id)
            SELECT {author}, new_followers.id FROM {author_source}new_followers ORDER BY new_followers.id
            RETURNING author_id
        ), counted AS (
            {FollowerCount.upsert("SELECT author_id, count(*) FROM subscribed GROUP BY author_id")}
        )"""


class Subscription(BaseModel):
    # The unique (author, follower) index is the truth of who follows whom;
    # (author, id) reads an author's followers in subscription order from
    # any depth (User.followers_page). An index on author alone would be
    # redundant with both.
    id = AutoField()  # as Peewee would add it, written out for type checkers
    author = ForeignKeyField(User, on_delete="CASCADE", index=False)
    follower = ForeignKeyField(User, on_delete="CASCADE")
    author_id: int  # the foreign keys' raw ids, which Peewee adds
    follower_id: int

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


#: ``User.add_followers``'s two statements: for new logins, and skipping existing ones.
_ADD_NEW_FOLLOWERS = (
    f"WITH {followers_ctes(password='%(password)s', skip_existing=False)} SELECT count(*) FROM subscribed"
)
_ADD_FOLLOWERS_SKIPPING_EXISTING = f"WITH {followers_ctes(password='%(password)s')} SELECT count(*) FROM subscribed"


MODELS = [User, Subscription, FollowerCount]
