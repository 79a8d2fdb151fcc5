"""The operator console at /console: server-rendered pages over the same
domain functions as the JSON API, kept live by /console/static/console.js,
which polls that API. Buttons are forms (CSRF-checked by
``web.console_auth.ConsoleAccess``) that act and redirect back with a
notice (``?notice=<code>``: a fixed sentence, never text from the URL)."""

import re
from urllib.parse import urlencode

import falcon

import followers
import jobs
import validation
from actors import BrokerUnavailable
from db import DeadLetter, Job, MessageEvent
from ops import dead_letters, queues
from ops.dead_letters import DeadLetterQueueBusy

from .console_auth import redirect
from .dead_letters import MESSAGE_ID_MAX, check_id
from .jobs import JOB_STATUSES, JOBS_QUERY, jobs_page
from .pages import render
from .workers import workers

PAGE_SIZE = 50
NOTICES = {
    "cancelled": "Job {id} is cancelled: its units not applied yet will be skipped.",
    "finished": "Job {id} is finished already: there is nothing left to cancel.",
    "replayed": "Dead letter {id} is back in the work queue.",
    "purged": "Dead letter {id} is purged.",
    "missing": "Dead letter {id} is not there any more (replayed, purged or expired).",
    "busy": "Another replay or purge is walking the dead-letter queue: try again in a moment.",
    "broker": "RabbitMQ does not answer: nothing was done.",
}


#: What a notice may name: a job's id or a dead letter's (Dramatiq's are
#: uuids), never a sentence a link's author wrote.
_NOTICE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def _notice(req):
    template = NOTICES.get(req.get_param("notice") or "")
    shown = req.get_param("id") or ""
    return template.format(id=shown if _NOTICE_ID.fullmatch(shown) else "?") if template else None


class OverviewPage:
    console = True

    def on_get(self, req, resp):
        render(req, resp, "overview.html", queues=queues.overview(), workers=workers(),
               jobs=Job.count_by_status(), statuses=JOB_STATUSES)


class JobsPage:
    console = True

    def on_get(self, req, resp):
        query = validation.validate(req.params, {name: field for name, field in JOBS_QUERY.items() if name != "limit"})
        query["limit"] = PAGE_SIZE
        page = jobs_page(query)
        filters = {key: query[name] for key, name in (("status", "status"), ("userId", "userId")) if query[name]}
        render(req, resp, "jobs.html", page=page, statuses=JOB_STATUSES, filters=filters,
               first_page=query["cursor"] is None,
               api_query=urlencode({**filters, **({"cursor": query["cursor"]} if query["cursor"] else {}),
                                    "limit": PAGE_SIZE}),
               next_url="?" + urlencode({**filters, "cursor": page["nextCursor"]}) if page["nextCursor"] else None)


class JobPage:
    console = True

    def on_get(self, req, resp, job_id):
        try:
            job = jobs.get_job(job_id)
        except followers.NotFound as error:
            render(req, resp, "missing.html", status=falcon.HTTP_404, what=str(error))
            return
        render(req, resp, "job.html", job=job.to_dict(), units=job.unit_rows(), timeline=timeline(MessageEvent.of_job(
            job_id)), notice=_notice(req))


class CancelJobAction:
    """Parameters:
      relay(Relay): woken after the cancel, as by ``JobResource``.
    """

    console = True

    def __init__(self, *, relay):
        self.relay = relay

    def on_post(self, req, resp, job_id):
        try:
            if jobs.cancel_job(job_id).sent:
                self.relay.wake()
            notice = "cancelled"
        except jobs.JobFinished:
            notice = "finished"
        redirect(resp, f"/console/jobs/{job_id}?{urlencode({'notice': notice, 'id': job_id})}")


class DeadLettersPage:
    console = True

    def on_get(self, req, resp):
        page = validation.validate(req.params, {"offset": validation.PAGE["offset"]})
        items, total = DeadLetter.page(limit=PAGE_SIZE, offset=page["offset"])
        render(req, resp, "dead_letters.html", items=[item.to_dict() for item in items], total=total,
               offset=page["offset"], page_size=PAGE_SIZE, notice=_notice(req))


class DeadLetterAction:
    """POST /console/dead-letters/{id}/replay or .../purge."""

    console = True

    def on_post(self, req, resp, message_id, action):
        act = {"replay": dead_letters.replay_one, "purge": dead_letters.purge_one}.get(action)
        if act is None:
            raise falcon.HTTPNotFound(title="not found", description=f"no action {action!r}")
        try:
            check_id(message_id)
            act(message_id)
            notice = {"replay": "replayed", "purge": "purged"}[action]
        except followers.NotFound:
            notice = "missing"
        except DeadLetterQueueBusy:
            notice = "busy"
        except BrokerUnavailable:
            notice = "broker"
        redirect(resp, "/console/dead-letters?" + urlencode({"notice": notice, "id": message_id[:MESSAGE_ID_MAX]}))


def timeline(events, width=1000):
    """The deliveries of a job drawn as bars on lanes (one per worker process
    and thread), in SVG user units across ``width``; None without events
    (recorded only by the lab's workers, lab.workers)."""
    if not events:
        return None
    start = min(event.started for event in events)
    end = max(event.ended or event.started for event in events)
    span = max((end - start).total_seconds(), 0.001)
    lanes = sorted({(event.pid, event.thread) for event in events})
    bars = []
    for event in events:
        left = (event.started - start).total_seconds() / span * width
        right = ((event.ended or end) - start).total_seconds() / span * width
        bars.append({
            "lane": lanes.index((event.pid, event.thread)), "x": round(left, 1),
            "width": round(max(right - left, 2), 1), "outcome": event.outcome,
            "title": f"unit {event.unit}: {event.outcome}"
            f"{' (redelivered)' if event.redelivered else ''}, {(event.ended or end) - event.started}"
            f"{': ' + event.error if event.error else ''}",
        })
    return {"lanes": [f"pid {pid} {thread}" for pid, thread in lanes], "bars": bars, "seconds": round(span, 2),
            "width": width}
