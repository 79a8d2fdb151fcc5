"""The rows of the results table: for each figure a workload measures, its
label, its size and its unit, in the order the table shows them (the
measuring is ``bench.workloads``)."""

import os

from . import follower_pages

RATE = "followers/s"


def followers(count):
    return f"{count:,} followers"


def rows(args):
    """key -> (label, size, unit) of every row of the table, in order."""
    sync, one, chunked = followers(args.sync_count), followers(args.one_count), followers(args.chunked_count)
    latency, memory = f"{args.latency_requests} requests", followers(args.memory_count)
    load = f"{args.api_seconds:g} s, {args.api_clients} clients"
    loaded = f"{args.api_seconds:g} s, {args.latency_clients} clients"
    small = f"{args.small_jobs:,} jobs, {args.api_clients} clients"
    deep = followers(args.depth_followers)
    pages = {}
    for depth in follower_pages.depths(args.depth_followers):
        for how in ("offset", "cursor"):
            label = f"(6) service: a page of {follower_pages.PAGE} at depth {depth:,}, by {how}"
            pages[f"page_{how}_{depth}"] = (label, deep, "ms")
    return {
        "loop": ("(a) original's loop in Peewee, autocommit", followers(args.loop_count), RATE),
        "insert_many": ("(b) Peewee insert_many, batches of 1,000", sync, RATE),
        "copy": ("(c) COPY users + INSERT ... SELECT", sync, RATE),
        "sync": ("(1) service: sync add-followers over HTTP", sync, RATE),
        "sync_statements": ("(1s) the statements of (1) alone, password hashed beforehand", sync, RATE),
        "pika": ("(d) pika + psycopg2, 2 consumers, 1 follower/message", one, RATE),
        "async_one": ("(2) service: async, 1 follower/message, POST → done", one, RATE),
        "dramatiq": ("(f) bare Dramatiq, 2 × 8 threads, 1 follower/message", one, RATE),
        "async_one_classic": ("(2c) the same on classic queues (2 is on quorum queues)", one, RATE),
        "pg_one": ("(2) PostgreSQL's CPU while (2) runs", one, "cores"),
        "async_chunked": ("(3) service: async, default chunking, POST → done", chunked, RATE),
        "async_chunked_classic": ("(3c) the same on classic queues (3 is on quorum queues)", chunked, RATE),
        "pg_chunked": ("(3) PostgreSQL's CPU while (3) runs", chunked, "cores"),
        "publish": ("(e) pika publish, a confirm per message", f"{args.publish_count:,} messages", "messages/s"),
        "api_rps": ("(4) service: async requests, count=10", load, "requests/s"),
        "api_p99_loaded": ("(4) service: p99 latency, async count=10, under load", loaded, "ms"),
        "api_p50": ("(4) service: median latency, async count=100,000", latency, "ms"),
        "api_p99": ("(4) service: p99 latency, async count=100,000", latency, "ms"),
        "handoff_p50": ("(4) service: median time from a 202 to its message on the queue", latency, "ms"),
        "handoff_p99": ("(4) service: p99 time from a 202 to its message on the queue", latency, "ms"),
        "small_e2e": ("(4) service: 1-follower async jobs, POST → all done", small, "jobs/s"),
        "small_intake": ("(4) service: 1-follower async jobs, intake only (API alone)", small, "jobs/s"),
        "small_cpu": ("(4) service: worker CPU per 1-follower job", small, "ms"),
        "scrypt": ("(4) one scrypt hash of the followers' password, CPU, in the bench", "1 hash", "ms"),
        "scrypt_bound": (f"(4) bound: {os.cpu_count()} cores ÷ one scrypt hash", "", "jobs/s"),
        **pages,
        "worker_rss": ("(5) service: peak RSS of a worker process", memory, "MB"),
        "api_rss_growth": ("(5) service: API worker RSS growth", memory, "MB"),
    }
