"""Baseline (c): PostgreSQL ``COPY`` into users, then ``INSERT ... SELECT``
the subscriptions, in one transaction: the fastest way a client can stream
rows in."""

import io
import time


def run(conn, author_id, followers_login, count, password_hash):
    """Add ``count`` new followers (COPY refuses existing logins); returns
    the seconds it took."""
    started = time.perf_counter()
    logins = [f"{followers_login}_#{i}" for i in range(count)]
    rows = io.StringIO("".join(f"{login}\t{password_hash}\t{i}\tt\n" for i, login in enumerate(logins)))
    with conn, conn.cursor() as cursor:
        cursor.copy_expert("COPY users (login, password, age, is_active) FROM STDIN", rows)
        cursor.execute(
            """
            INSERT INTO subscriptions (author_id, follower_id)
            SELECT %s, users.id FROM unnest(%s::text[]) AS new(login) JOIN users USING (login)
            """,
            (author_id, logins),
        )
    return time.perf_counter() - started
