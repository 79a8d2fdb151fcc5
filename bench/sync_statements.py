"""Row (1s): a sync request's statements alone. What a sync request (1)
runs once its password is hashed (``followers.add_followers_hashed``: its
statements of ``SYNC_STATEMENT_ROWS`` followers on ``SYNC_PARALLELISM``
pooled connections at once, each committing on its own), called in the
bench's process on the baselines' database, with the password hashed
beforehand as COPY (c) has it. (1) less (1s) is what one scrypt hash and
HTTP cost a request: target 7's measured reason, in the same run."""

import time

import followers


def run(author_id, followers_login, count, password_hash):
    """Add ``count`` new followers; returns the seconds it took."""
    started = time.perf_counter()
    created, _ = followers.add_followers_hashed(author_id, followers_login, count, password_hash)
    seconds = time.perf_counter() - started
    if created != count:
        raise RuntimeError(f"the sync statements created {created} of {count} followers: "
                           f"is {followers_login!r} reused?")
    return seconds
