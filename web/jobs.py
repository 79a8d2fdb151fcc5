"""Jobs: ``GET /api/v1/jobs`` (newest first, keyset pages),
``GET /api/v1/jobs/{id}`` and ``DELETE /api/v1/jobs/{id}`` (cancel)."""

import jobs
import validation
from db import Job

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")

JOBS_QUERY = {
    "status": validation.Choice(JOB_STATUSES, default=None),
    "userId": validation.Integer(minimum=1, default=None),
    "limit": validation.Integer(minimum=1, maximum=500, default=50),
    # The id of the last job of the previous page: the next page has older ones.
    "cursor": validation.Integer(minimum=1, default=None),
}


def jobs_page(query):
    """A page of jobs for a validated JOBS_QUERY: ``{"items", "nextCursor"}``,
    nextCursor null on the last page (the API and the console alike)."""
    rows = Job.page(status=query["status"], user_id=query["userId"], before=query["cursor"],
                    limit=query["limit"] + 1)  # one more tells whether a next page exists
    more = len(rows) > query["limit"]
    rows = rows[: query["limit"]]
    return {
        "items": [job.to_dict(progress=progress, unit_errors=errors) for job, progress, errors in rows],
        "nextCursor": rows[-1][0].id if more else None,
    }


class JobsResource:
    def on_get(self, req, resp):
        resp.media = jobs_page(validation.validate(req.params, JOBS_QUERY))


class JobResource:
    """Parameters:
      relay(Relay): This process's outbox relay, woken after a cancel that
        wrote a message (an ordered chain passed on: ``jobs.cancel_job``).
    """

    token_required = ("DELETE",)  # when settings.API_TOKEN is set (web.middleware.BearerToken)

    def __init__(self, *, relay):
        self.relay = relay

    def on_get(self, req, resp, job_id):
        resp.media = jobs.get_job(job_id).to_dict()

    def on_delete(self, req, resp, job_id):
        job, sent = jobs.cancel_job(job_id)
        if sent:
            self.relay.wake()
        resp.media = job.to_dict()
