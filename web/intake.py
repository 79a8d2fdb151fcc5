"""How the API takes in an asynchronous request: the job and its messages
committed in PostgreSQL (``jobs.create_job``), then the relay woken to
publish them. A 202 means "committed": RabbitMQ may be down, the messages
wait in the outbox."""

import falcon

import jobs


class Backpressure(Exception):
    """The outbox holds more unsent messages than it may: 503, retry later."""

    retry_after = 5


class JobIntake:
    """Creates jobs for the add-followers resource; the lab passes its own,
    to inject faults between the commit and the hand-off.

    Parameters:
      relay(Relay): This process's outbox relay.
      max_pending(int): Unsent messages above which new jobs are refused.
    """

    def __init__(self, *, relay, max_pending):
        self.relay = relay
        self.max_pending = max_pending

    def check_backlog(self):
        pending = self.relay.pending(at_most=self.max_pending + 1)
        if pending > self.max_pending:
            raise Backpressure(
                f"more than {self.max_pending} messages wait in the outbox for RabbitMQ; "
                f"retry in {Backpressure.retry_after} s"
            )

    def create(self, user_id, followers_login, count):
        """Commit a job and its messages (inside the caller's transaction, if any)."""
        return jobs.create_job(user_id, followers_login, count)

    def committed(self, job_id):
        """The job is committed: hand its messages to the relay now."""
        self.relay.wake()


def handle_backpressure(req, resp, exception, params):
    raise falcon.HTTPServiceUnavailable(
        title="too many messages waiting", description=str(exception), retry_after=exception.retry_after
    )
