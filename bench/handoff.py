"""From a 202 to the job's messages on the queue: the outbox's hand-off.

The API commits a job with its messages in the outbox and wakes its relay,
which publishes them; this measures, per request, the time from the 202
reaching the client to the job's message reaching a consumer of the queue
(nobody else consumes it: the stack runs no workers)."""

import json
import statistics
import threading
import time

import pika

import settings
from harness import wait_for

from .service import expect, p99


class QueueWatch:
    """A consumer that notes when each job's first message arrives."""

    def __init__(self, queue_name):
        self.arrived = {}  # job id -> perf_counter()
        self.connection = pika.BlockingConnection(pika.URLParameters(settings.RABBITMQ_URL.split(";")[0]))
        self.channel = self.connection.channel()
        self.channel.basic_qos(prefetch_count=1000)
        self.channel.basic_consume(queue_name, self._on_message, auto_ack=True)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_message(self, channel, method, properties, body):
        now = time.perf_counter()
        job_id = json.loads(body)["kwargs"].get("job_id")
        self.arrived.setdefault(job_id, now)

    def _run(self):
        while not self.stopping:
            self.connection.process_data_events(time_limit=0.05)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.connection.close()


def handoff_latency(stack, user_id, *, requests_count):
    """(p50, p99) in ms from a 202 to its job's message on the queue, over
    ``requests_count`` sequential one-unit async requests."""
    watch = QueueWatch(stack.queue_name)
    answered = {}
    try:
        for i in range(requests_count):
            response = stack.post("/api/v1/add-followers", json={
                "userId": user_id, "followersLogin": f"handoff{i}", "count": 1, "async": 1})
            answered[expect(response, 202, "async add-followers")["jobId"]] = time.perf_counter()
        wait_for(lambda: set(answered) <= set(watch.arrived), timeout=30,
                 what=f"the messages of {requests_count} jobs on {stack.queue_name}")
    finally:
        watch.close()
    # A message may reach the consumer before the 202 reaches the client: 0 then.
    waits = [max(0.0, watch.arrived[job] - at) * 1000 for job, at in answered.items()]
    return statistics.median(waits), p99(waits)
