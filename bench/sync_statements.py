"""Row (1s): the service's sync statements alone. What a sync request (1)
runs once its password is hashed: ``User.add_followers``'s statement for
each of ``followers.statement_ranges``, on ``SYNC_PARALLELISM`` connections
at once, each statement committing on its own. It runs on the baselines'
database with the password hashed beforehand, as COPY (c) has it, so that
(1) less (1s) is what one scrypt hash and HTTP cost a request: target 7's
measured reason, in the same run."""

import time
from concurrent.futures import ThreadPoolExecutor

from db.models import User
from followers import statement_ranges


def run(conns, author_id, followers_login, count, password_hash):
    """Add ``count`` new followers over ``conns`` (one thread each); returns
    the seconds it took."""
    ranges = statement_ranges(count)

    def add(conn, mine):
        created = 0
        for start, stop in mine:
            with conn, conn.cursor() as cursor:
                cursor.execute(*User.add_followers_statement(author_id, followers_login, start, stop,
                                                            password_hash))
                created += cursor.fetchone()[0]
        return created

    with ThreadPoolExecutor(len(conns)) as pool:
        started = time.perf_counter()
        shares = [ranges[i::len(conns)] for i in range(len(conns))]
        created = sum(pool.map(add, conns, shares))
        seconds = time.perf_counter() - started
    if created != count:
        raise RuntimeError(f"the sync statements created {created} of {count} followers: "
                           f"is {followers_login!r} reused?")
    return seconds
