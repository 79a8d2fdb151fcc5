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
    def add_followers(cls, author_id, followers_login, start, stop, password_hash):
        """Create users ``{followers_login}_#{i}`` for i in [start, stop) and
        subscribe each to the author, in one statement: PostgreSQL generates
        the rows itself, so 10,000 followers cost one round trip, not 30,000.

        A login that already exists is skipped and not subscribed. Returns
        how many were created.
        """
        if stop <= start:
            return 0
        ctes = followers_ctes(password="%(password)s")
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


def followers_ctes(*, password, source="", prefix="%(prefix)s", start="%(start)s",
                   stop="%(stop)s", author="%(author)s", author_source=None):
    """The two data-modifying CTEs that add followers [start, stop) to an
    author: ``new_followers`` (users made: their id and age, which is their
    index i) and ``subscribed``. Rows go in in order of i, so two
    transactions on overlapping ranges lock in the same order and cannot
    deadlock. ``password``, ``prefix``, ``start``, ``stop`` and ``author``
    are SQL expressions (parameters by default); ``source`` a FROM item
    they may refer to, ``author_source`` the one ``author`` refers to if
    another (one row: a source of several ranges must not multiply the
    subscriptions)."""
    author_source = source if author_source is None else author_source
    source = f"{source}, " if source else ""
    author_source = f"{author_source}, " if author_source else ""
    return f"""
        new_followers AS (
            INSERT INTO users (login, password, age, is_active)
            SELECT {prefix} || i, {password}, i, TRUE
            FROM {source}generate_series({start}, {stop} - 1) AS i
            ORDER BY i
            ON CONFLICT (login) DO NOTHING
            RETURNING id, age
        ), subscribed AS (
            INSERT INTO subscriptions (author_id, follower_id)
            SELECT {author}, new_followers.id FROM {author_source}new_followers ORDER BY new_followers.id
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


MODELS = [User, Subscription]
