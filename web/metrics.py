"""Prometheus metrics of the API, served at ``GET /metrics``.

gunicorn runs several worker processes; each keeps its counters in files of
``settings.API_METRICS_DIR`` (prometheus_client's multiprocess mode, switched
on by gunicorn.conf.py before any worker imports prometheus_client), and a
scrape, whichever worker answers it, adds them all up. Job counts are not
kept by any process: they are counted in the database at scrape time.
"""

import functools
import logging
import re
import time

import falcon
from peewee import InterfaceError, OperationalError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from db import Job

logger = logging.getLogger("followers.api")

REQUESTS = Counter(
    "followers_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "followers_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
UNMATCHED = "unmatched"  # requests for no route: one label, whatever the path
#: What Job.to_dict() calls a job; each is exported, 0 included.
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")


def multiprocess():
    """Whether this process keeps its metrics in files (gunicorn.conf.py set
    PROMETHEUS_MULTIPROC_DIR before prometheus_client was imported)."""
    return values.ValueClass is not values.MutexValue


class RequestMetrics:
    """Count and time every request by its route template (never its raw
    path, which would make a series per user id)."""

    def __init__(self, router):
        self.router = router

    def process_request(self, req, resp):
        req.context.metrics_started = time.perf_counter()

    def process_response(self, req, resp, resource, req_succeeded):
        started = req.context.get("metrics_started")
        if started is None:
            return
        route = _label(req.uri_template or self._template(req.path))
        labels = (req.method, route, str(resp.status_code))
        REQUESTS.labels(*labels).inc()
        LATENCY.labels(*labels).observe(time.perf_counter() - started)

    def _template(self, path):
        # Requests refused before routing (413) still count under their route.
        found = self.router.find(path)
        return found[3] if found else UNMATCHED


@functools.lru_cache(maxsize=64)
def _label(template):
    """/api/v1/users/{user_id:int(min=1)} -> /api/v1/users/{user_id}, as openapi.json writes it."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", template)


class JobsCollector:
    """``followers_jobs{status}``: jobs by status, counted at scrape time."""

    def collect(self):
        gauge = GaugeMetricFamily("followers_jobs", "Asynchronous jobs by status, counted in the database.",
                                  labels=["status"])
        try:
            counts = Job.count_by_status()
        except (OperationalError, InterfaceError) as error:
            logger.warning("metrics: cannot count jobs: %s", str(error).strip())
            return
        for status in sorted({*JOB_STATUSES, *counts}):
            gauge.add_metric([status], counts.get(status, 0))
        yield gauge


class MetricsResource:
    def __init__(self, metrics_dir):
        self.metrics_dir = metrics_dir

    def on_get(self, req, resp):
        jobs = CollectorRegistry()
        jobs.register(JobsCollector())
        if multiprocess():
            requests = CollectorRegistry()
            MultiProcessCollector(requests, path=self.metrics_dir)
        else:
            requests = REGISTRY
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(requests) + generate_latest(jobs)
        resp.status = falcon.HTTP_200
