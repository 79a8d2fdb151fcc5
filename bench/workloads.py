"""How each row of the table is measured, and the set-up it needs (the
rows' labels, sizes and units are ``bench.rows``).

One ``Bench`` owns everything a run starts: the baselines' database, the
service's stacks (each its own database ``followers_<prefix>...``, queue
``<prefix>..._add_followers`` and port) and the pika consumers, and tears it
all down at the end, whatever happened.
"""

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import passwords
import settings
from db import schema
from harness import ROOT, Stack, database_url, delete_queues, purge_queue

from . import (
    bare_dramatiq,
    baseline_db,
    confirmed_publish,
    copy_then_select,
    follower_pages,
    handoff,
    insert_many,
    original_loop,
    pika_pipeline,
    service,
    sync_statements,
)
from .memory import PeakRss, cpu_seconds
from .pg_cpu import cores_used
from .progress import say

#: Every workload of a round, baselines alternating with the service.
ORDER = [
    "loop", "sync", "copy", "sync_statements", "insert_many", "pika", "async_one", "async_one_classic", "dramatiq",
    "async_chunked", "async_chunked_classic", "publish", "api", "small_jobs", "depth",
]
WORKLOADS = ORDER + ["memory"]


class Bench:
    def __init__(self, args):
        self.args = args
        self.selected = set(args.workloads)
        self.prefix = args.prefix
        # Stacks add settings.STACK_PREFIX to their names; the baselines do the same.
        own = f"{settings.STACK_PREFIX}{self.prefix}"
        self.baseline_url = database_url(f"followers_{own}_baselines")
        self.pika_queue = f"{own}_pika"
        self.dramatiq_queue = f"{own}_dramatiq"
        self.publish_queue = f"{own}_publish"
        self.conn = None
        self.consumers = []
        self.bare_workers = None
        self.stacks = {}
        self.authors = {}
        self.password_hash = passwords.hash_password("fan")
        self.round = 0
        self.deep_author = None

    # --- Set-up and tear-down ---------------------------------------------

    def needs(self, *keys):
        return bool(self.selected.intersection(keys))

    def set_up(self):
        biggest = max(self.args.chunked_count, self.args.memory_count, 100_000)
        common = {"MAX_FOLLOWERS_PER_REQUEST": str(biggest), "QUEUE_TYPE": "quorum"}
        wanted = {}
        if self.needs("sync", "async_chunked", "memory", "small_jobs", "depth"):
            wanted["main"] = Stack(self.prefix, env=common)
        if self.needs("async_one"):
            wanted["one"] = Stack(f"{self.prefix}_one", env={**common, "FOLLOWERS_PER_MESSAGE": "1"})
        # The same stacks on classic queues, measured alternately with them.
        if self.needs("async_one_classic"):
            wanted["one_classic"] = Stack(
                f"{self.prefix}_one_classic", env={**common, "FOLLOWERS_PER_MESSAGE": "1", "QUEUE_TYPE": "classic"}
            )
        if self.needs("async_chunked_classic"):
            wanted["main_classic"] = Stack(f"{self.prefix}_classic", env={**common, "QUEUE_TYPE": "classic"})
        if self.needs("api", "small_jobs"):
            # The API alone: its figures are what the API does, with no
            # worker competing for the 2 cores (as with the publish baseline).
            wanted["api"] = Stack(f"{self.prefix}_api", env=common)
        self.stacks = wanted
        names = ", ".join(stack.name for stack in wanted.values()) or "none"
        say(f"starting the service: {names} (logs in artifacts/logs/)")
        with ThreadPoolExecutor(max(1, len(wanted))) as pool:
            for name, author in zip(wanted, pool.map(self._start_stack, wanted), strict=True):
                self.authors[name] = author
        if self.needs("loop", "insert_many", "copy", "sync_statements", "pika", "dramatiq"):
            say(f"setting up the baselines' database {self.baseline_url.rsplit('/', 1)[1]}")
            baseline_db.reset(self.baseline_url)
            self.conn = baseline_db.connect(self.baseline_url)
            self.authors["baseline"] = baseline_db.create_author(self.conn, "author")

    def _start_stack(self, name):
        """Start one stack on a fresh database; returns its author's id."""
        stack = self.stacks[name]
        stack.reset()
        if name == "api":
            stack.start_api()
        else:
            stack.start()
        return service.create_author(stack, "author")

    def tear_down(self):
        """Stop and drop everything this run started; a step that fails is
        reported and the others still run."""
        steps = [("the pika consumers", lambda: pika_pipeline.stop_consumers(self.consumers))]
        if self.bare_workers is not None:
            steps.append(("the bare dramatiq workers", self.bare_workers.stop))
        steps += [(f"the {stack.name} processes", stack.stop) for stack in self.stacks.values()]
        if self.conn is not None:
            steps.append(("the baselines' connection", self._close_baseline_db))
        queues = [self.pika_queue, self.dramatiq_queue, self.publish_queue]
        for queue in queues + [stack.queue_name for stack in self.stacks.values()]:
            steps.append((f"queue {queue}", lambda queue=queue: delete_queues(queue)))
        # The databases hold millions of rows after a run: give the disk back.
        for url in [self.baseline_url] + [stack.database_url for stack in self.stacks.values()]:
            steps.append((f"database {url.rsplit('/', 1)[1]}", lambda url=url: schema.drop_database(url)))
        for what, step in steps:
            try:
                step()
            except Exception as error:  # noqa: BLE001 - clean up the rest whatever failed
                say(f"could not clean up {what}: {type(error).__name__}: {error}; remove it by hand")

    def _close_baseline_db(self):
        self.conn.close()
        baseline_db.close()

    # --- Workloads: each returns {row key: value} ---------------------------

    def login(self, key):
        return f"r{self.round}_{key}"

    def run(self, key):
        return getattr(self, f"run_{key}")()

    def run_loop(self):
        count = self.args.loop_count
        seconds = original_loop.run(self.authors["baseline"], self.login("loop"), count, self.password_hash)
        return {"loop": count / seconds}

    def run_insert_many(self):
        count = self.args.sync_count
        seconds = insert_many.run(self.authors["baseline"], self.login("many"), count, self.password_hash)
        return {"insert_many": count / seconds}

    def run_copy(self):
        count = self.args.sync_count
        author = self.authors["baseline"]
        seconds = copy_then_select.run(self.conn, author, self.login("copy"), count, self.password_hash)
        return {"copy": count / seconds}

    def run_sync_statements(self):
        count = self.args.sync_count
        author = self.authors["baseline"]
        seconds = sync_statements.run(author, self.login("statements"), count, self.password_hash)
        return {"sync_statements": count / seconds}

    def run_sync(self):
        count = self.args.sync_count
        seconds = service.add_followers_sync(self.stacks["main"], self.authors["main"], self.login("sync"), count)
        return {"sync": count / seconds}

    def run_pika(self):
        count = self.args.one_count
        log = ROOT / "artifacts" / "logs" / f"{self.prefix}_pika" / "consumers.log"
        self.consumers = pika_pipeline.start_consumers(self.pika_queue, self.baseline_url, log)
        try:
            seconds = pika_pipeline.run(
                self.conn, self.pika_queue, self.authors["baseline"], self.login("pika"), count, self.password_hash
            )
        finally:
            pika_pipeline.stop_consumers(self.consumers)
            self.consumers = []
        self.bare_workers = None
        return {"pika": count / seconds}

    def _async(self, name, login, count):
        """(seconds, PostgreSQL's cores) of one async job on stack ``name``."""
        stack = self.stacks[name]
        database = stack.database_url.rsplit("/", 1)[1]
        return cores_used(database, lambda: service.add_followers_async(stack, self.authors[name], login, count))

    def run_async_one(self):
        count = self.args.one_count
        seconds, cores = self._async("one", self.login("one"), count)
        return {"async_one": count / seconds, **({"pg_one": cores} if cores is not None else {})}

    def run_async_one_classic(self):
        count = self.args.one_count
        seconds, _ = self._async("one_classic", self.login("one_classic"), count)
        return {"async_one_classic": count / seconds}

    def run_dramatiq(self):
        count = self.args.one_count
        log = ROOT / "artifacts" / "logs" / f"{settings.STACK_PREFIX}{self.prefix}_dramatiq" / "workers.log"
        self.bare_workers = bare_dramatiq.start_workers(self.dramatiq_queue, self.baseline_url, log)
        try:
            seconds = bare_dramatiq.run(
                self.conn, self.dramatiq_queue, self.authors["baseline"], self.login("dramatiq"), count,
                self.password_hash,
            )
        finally:
            self.bare_workers.stop()
            self.bare_workers = None
        return {"dramatiq": count / seconds}

    def run_async_chunked(self):
        count = self.args.chunked_count
        seconds, cores = self._async("main", self.login("chunked"), count)
        return {"async_chunked": count / seconds, **({"pg_chunked": cores} if cores is not None else {})}

    def run_async_chunked_classic(self):
        count = self.args.chunked_count
        seconds, _ = self._async("main_classic", self.login("chunked_classic"), count)
        return {"async_chunked_classic": count / seconds}

    def run_publish(self):
        count = self.args.publish_count
        return {"publish": count / confirmed_publish.run(self.publish_queue, count)}

    def run_api(self):
        stack, author = self.stacks["api"], self.authors["api"]
        rps, _ = service.async_requests_per_second(
            stack, author, seconds=self.args.api_seconds, clients=self.args.api_clients
        )
        # Issue 15 asks for the p99 with 16 clients at once: twice the
        # clients of the requests/s row, so requests queue for the one API process's core.
        _, loaded_p99 = service.async_requests_per_second(
            stack, author, seconds=self.args.api_seconds, clients=self.args.latency_clients
        )
        p50, p99 = service.async_latency(stack, author, count=100_000, requests_count=self.args.latency_requests)
        # Nobody consumes this stack's queue: empty it so every round starts alike.
        purge_queue(stack.queue_name)
        handoff_p50, handoff_p99 = handoff.handoff_latency(stack, author, requests_count=self.args.latency_requests)
        purge_queue(stack.queue_name)
        return {"api_rps": rps, "api_p99_loaded": loaded_p99, "api_p50": p50, "api_p99": p99,
                "handoff_p50": handoff_p50, "handoff_p99": handoff_p99}

    def run_memory(self):
        stack, count = self.stacks["main"], self.args.memory_count
        workers = stack.workers.children()
        api_workers = stack.api.children()
        rss = PeakRss(workers + api_workers)
        if not rss.peaks_reset:
            say("    could not reset the workers' VmHWM: their peaks may be from an earlier workload")
        seconds = service.add_followers_async(
            stack, self.authors["main"], "memory", count, timeout=1800, on_poll=rss.sample
        )
        rss.sample()
        high = rss.high_water_mb()
        growth = rss.growth_mb()
        say(
            f"    {count:,} followers in {seconds:.1f} s; worker peak RSS (VmHWM) "
            + ", ".join(f"pid {pid}: {high[pid]:.0f} MB" for pid in workers)
            + "; API RSS growth "
            + ", ".join(f"pid {pid}: {growth[pid]:+.1f} MB" for pid in api_workers)
        )
        return {
            "worker_rss": max(high[pid] for pid in workers),
            "api_rss_growth": max(growth[pid] for pid in api_workers),
        }


    def run_small_jobs(self):
        """1-follower async jobs: end to end with the workers, then the
        intake alone on the API-only stack (its queue emptied after), and
        what bounds them: the worker CPU per job against one scrypt hash."""
        jobs, clients = self.args.small_jobs, self.args.api_clients
        stack = self.stacks["main"]
        workers = stack.workers.children()
        cpu_before = sum(map(cpu_seconds, workers))
        seconds = service.small_jobs(stack, self.authors["main"], self.login("small"), jobs=jobs, clients=clients)
        cpu_ms = (sum(map(cpu_seconds, workers)) - cpu_before) * 1000 / jobs
        intake = service.small_jobs(
            self.stacks["api"], self.authors["api"], self.login("small"), jobs=jobs, clients=clients, wait=False
        )
        purge_queue(self.stacks["api"].queue_name)  # kept: its publisher declared it once
        hashes = []
        for _ in range(5):
            # CPU time, as the workers' is: the other processes on the cores
            # do not count. This process's, since the hash runs on a hashing
            # thread (passwords.py); its other threads are idle meanwhile.
            started = time.process_time()
            passwords.hash_password("fan")
            hashes.append((time.process_time() - started) * 1000)
        scrypt_ms = statistics.median(hashes)
        return {
            "small_e2e": jobs / seconds,
            "small_intake": jobs / intake,
            "small_cpu": cpu_ms,
            "scrypt": scrypt_ms,
            "scrypt_bound": os.cpu_count() * 1000 / scrypt_ms,
        }

    def run_depth(self):
        """One user's follower pages at several depths, by offset and by
        cursor; the user is built once, in the first round."""
        stack, count = self.stacks["main"], self.args.depth_followers
        if self.deep_author is None:
            author = service.create_author(stack, "deep")
            say(f"    building a user with {count:,} followers (once)")
            follower_pages.build(stack, author, count)
            self.deep_author = author
        pages = follower_pages.Pages(stack, self.deep_author)
        results = {}
        try:
            for depth in follower_pages.depths(count):
                cursor = pages.cursor_at(depth)
                for how, query in (("offset", f"offset={depth}"), ("cursor", f"cursor={cursor}")):
                    query = f"limit={follower_pages.PAGE}&{query}"
                    results[f"page_{how}_{depth}"] = pages.latency_ms(query, self.args.depth_requests)
        finally:
            pages.close()
        return results
