"""Workload (6): reading the followers of a user who has many, page by page,
at several depths, by ``offset`` (old clients) and by ``cursor`` (the
``next`` links), over HTTP against the real API."""

import statistics
import time
from urllib.parse import parse_qs, urlsplit

import psycopg2
import requests

from db.database import connect_params

from .progress import say
from .service import expect

PAGE = 100
#: Followers one synchronous request adds while the user is built.
BUILD_STEP = 100_000


def depths(count):
    """The first page, 1%, 10% and 50% of the way, and the last page."""
    return sorted({0, count // 100, count // 10, count // 2, max(0, count - PAGE)})


def build(stack, author, count):
    """Give ``author`` ``count`` followers through the sync API, a request
    of up to BUILD_STEP at a time, with progress; checks the total."""
    started = time.perf_counter()
    for number, start in enumerate(range(0, count, BUILD_STEP)):
        step = min(BUILD_STEP, count - start)
        body = {"userId": author, "followersLogin": f"deep{number}", "count": step, "async": 0}
        expect(stack.post("/api/v1/add-followers", json=body, timeout=600), 200, f"adding {step:,} followers")
        done = start + step
        rate = done / (time.perf_counter() - started)
        say(f"    building: {done:,}/{count:,} followers ({rate:,.0f}/s)")
    total = expect(stack.get(f"/api/v1/users/{author}/followers?limit=1"), 200, "the first page")["total"]
    if total != count:
        raise RuntimeError(f"user {author} has a total of {total:,} followers, expected {count:,}")
    # What autovacuum does shortly after a bulk load (PostgreSQL 13+ vacuums
    # insert-only tables too): statistics, and the visibility map that lets
    # an offset skip rows in the index alone. Pages by cursor need neither.
    say("    VACUUM ANALYZE users, subscriptions")
    conn = psycopg2.connect(**connect_params(stack.database_url))
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE users, subscriptions")
    finally:
        conn.close()


class Pages:
    """Timed GETs of one user's follower pages on one keep-alive session."""

    def __init__(self, stack, author):
        self.stack = stack
        self.path = f"/api/v1/users/{author}/followers"
        self.session = requests.Session()

    def get(self, query):
        response = self.session.get(f"{self.stack.url}{self.path}?{query}", timeout=60)
        return expect(response, 200, f"GET {self.path}?{query}")

    def cursor_at(self, depth):
        """The cursor whose page starts ``depth`` followers in (found once,
        by offset: the ``next`` of the page of 1 that ends just before)."""
        if depth == 0:
            return 0
        following = self.get(f"limit=1&offset={depth - 1}")["next"]
        return int(parse_qs(urlsplit(following).query)["cursor"][0])

    def latency_ms(self, query, requests_count):
        """Median milliseconds of ``requests_count`` GETs of one page."""
        times = []
        for _ in range(requests_count):
            started = time.perf_counter()
            page = self.get(query)
            times.append((time.perf_counter() - started) * 1000)
            if not page["items"]:
                raise RuntimeError(f"GET {self.path}?{query} answered an empty page")
        return statistics.median(times)

    def close(self):
        self.session.close()
