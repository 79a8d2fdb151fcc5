"""The HTTP API: ``gunicorn api:app``.

Resources are thin: they read and validate input (``validation``), call the
domain (``followers``, ``jobs``) or the intake (``web.intake``), and shape
the answer. Errors of every kind become a JSON body
``{"success": false, "error": ..., "description"?: ..., "fields"?: {...}}``
(``web.errors``); no stack trace ever reaches a client. The document of it
all is openapi.json, served at ``GET /openapi.json``.
"""

import json
from pathlib import Path

import falcon
from falcon.routing import CompiledRouter
from peewee import InterfaceError, OperationalError

import actors
import followers
import settings
import validation
from actors import BrokerUnavailable
from actors.publishing import Publisher
from db import Outbox
from validation import PG_INT_MAX
from web import errors, idempotency
from web.console import CancelJobAction, DeadLetterAction, DeadLettersPage, JobPage, JobsPage, OverviewPage
from web.console_auth import ConsoleAccess, LoginResource, LogoutResource, Sessions
from web.dead_letters import DeadLetterReplayResource, DeadLetterResource, DeadLettersResource
from web.intake import JobIntake
from web.jobs import JobResource, JobsResource
from web.lab_reports import LabPage, LabReport
from web.metrics import MetricsResource, RequestMetrics
from web.middleware import BearerToken, BodyLimit, DatabaseConnection
from web.pages import STATIC_DIR
from web.queues import QueuesResource
from web.workers import WorkersResource

ID = f"int(min=1, max={PG_INT_MAX})"  # out-of-range ids are unknown routes: 404
OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.json"


def read_form(req):
    """The request's fields as a dict, from JSON, an urlencoded form or a
    multipart form alike (the original's Postman requests are forms), and
    whether they are typed (JSON) or all text (forms)."""
    media = req.get_media()
    if isinstance(media, falcon.media.multipart.MultipartForm):
        return {part.name: part.get_text() for part in media}, False
    return media, not (req.content_type or "").lower().startswith(falcon.MEDIA_URLENCODED)


def _json_loads(text):
    try:
        return json.loads(text)
    except RecursionError:  # nested thousands deep: malformed, not a server error
        raise ValueError("JSON nested too deep") from None


def validate_body(req, form):
    data, typed = read_form(req)
    return validation.validate(data, form, typed=typed)


# --- Resources ---------------------------------------------------------------


class UsersResource:
    def on_post(self, req, resp):
        form = validate_body(req, validation.NEW_USER)
        user = followers.create_user(form["login"], form["password"], form["age"], form["isActive"])
        resp.status = falcon.HTTP_201
        resp.location = f"/api/v1/users/{user.id}"
        resp.media = {"id": user.id}


class UserResource:
    def on_get(self, req, resp, user_id):
        resp.media = followers.get_user(user_id).to_dict()


class FollowersResource:
    def on_get(self, req, resp, user_id):
        page = validation.validate(req.params, validation.PAGE)
        items, total, cursor = followers.followers_page(user_id, **page)
        # The next page by cursor, also for a client that came by offset.
        following = f"/api/v1/users/{user_id}/followers?limit={page['limit']}&cursor={cursor}"
        resp.media = {
            "items": [user.to_dict() for user in items],
            "total": total,
            "next": following if cursor is not None else None,
        }


class SubscriptionsResource:
    def on_post(self, req, resp):
        form = validate_body(req, validation.NEW_SUBSCRIPTION)
        try:
            subscription = followers.subscribe(form["authorId"], form["followerId"])
        except ValueError as error:
            raise validation.Invalid({"followerId": str(error)}) from None
        resp.status = falcon.HTTP_201
        resp.media = subscription.to_dict()


class AddFollowersResource:
    token_required = ("POST",)  # when settings.API_TOKEN is set (web.middleware.BearerToken)

    def __init__(self, *, intake, idempotent):
        self.intake = intake
        self.idempotent = idempotent

    def on_post(self, req, resp):
        form = validate_body(req, validation.ADD_FOLLOWERS)
        key = idempotency.key_of(req)
        run = self._add_now if not form["async"] else self._submit
        if key is None:
            status, body, replayed = *run(form), False
        else:
            # An async request claims its key and creates its job in one transaction.
            status, body, replayed = self.idempotent.run(key, form, lambda: run(form), atomic=bool(form["async"]))
        if form["async"] and not replayed:
            self.intake.committed(body["jobId"])
        if replayed:
            resp.set_header("Idempotent-Replayed", "true")
        if status == 202:
            resp.location = f"/api/v1/jobs/{body['jobId']}"
        resp.status = falcon.code_to_http_status(status)
        resp.media = body

    def _add_now(self, form):
        user = followers.get_user(form["userId"])
        created, skipped = followers.add_followers_now(user, form["followersLogin"], form["count"])
        return 200, {"created": created, "skipped": skipped}

    def _submit(self, form):
        self.intake.check_backlog()
        job = self.intake.create(form["userId"], form["followersLogin"], form["count"])
        return 202, {"success": True, "jobId": job.id, "messages": job.units}


class HealthResource:
    """200 while PostgreSQL answers: the API takes work then, even with
    RabbitMQ down (it waits in the outbox, which this shows)."""

    def __init__(self, *, publisher):
        self.publisher = publisher

    def on_get(self, req, resp):
        checks = {"database": "ok", "broker": "ok"}
        outbox = None
        try:
            pending, oldest_age = Outbox.backlog()
            outbox = {"pending": pending, "oldestAgeSeconds": oldest_age}
        except (OperationalError, InterfaceError) as error:
            checks["database"] = f"down: {str(error).strip()}"
        try:
            self.publisher.ping()
        except BrokerUnavailable as error:
            checks["broker"] = f"down: {error}; new jobs wait in the outbox"
        if checks["database"] != "ok":
            resp.status, status = falcon.HTTP_503, "unavailable"
        else:
            resp.status, status = falcon.HTTP_200, "ok" if checks["broker"] == "ok" else "degraded"
        resp.media = {"status": status, **checks, "outbox": outbox}


class OpenApiResource:
    """openapi.json, stating this server's own limits and whether it asks
    for the token."""

    def __init__(self, *, api_token):
        document = json.loads(OPENAPI_PATH.read_text())
        schemas = document["components"]["schemas"]
        for name in ("AddFollowersJson", "AddFollowersForm"):
            schemas[name]["properties"]["count"]["maximum"] = settings.MAX_FOLLOWERS_PER_REQUEST
        if not api_token:
            for operation in _operations(document):
                operation.pop("security", None)
        self.document = document

    def on_get(self, req, resp):
        resp.media = self.document


def _operations(document):
    for path_item in document["paths"].values():
        yield from (operation for method, operation in path_item.items() if method.upper() in falcon.HTTP_METHODS)


# --- The application ---------------------------------------------------------


def create_app(*, max_body_bytes=None, api_token=None, metrics_dir=None, intake=None, lab_reports_dir=None):
    """The WSGI app. ``intake`` creates async jobs (default: ``JobIntake``
    on this process's relay); the lab passes its own."""
    api_token = settings.API_TOKEN if api_token is None else api_token
    intake = intake or JobIntake(relay=actors.relay, max_pending=settings.OUTBOX_MAX_PENDING)
    sessions = Sessions(token=api_token, max_age=settings.CONSOLE_SESSION_S)
    router = CompiledRouter()
    app = falcon.App(
        router=router,
        middleware=[
            RequestMetrics(router),
            BodyLimit(max_bytes=max_body_bytes or settings.MAX_BODY_BYTES),
            BearerToken(api_token),
            ConsoleAccess(sessions=sessions),
            DatabaseConnection(),
        ],
    )
    errors.register(app)
    idempotency.register(app)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(loads=_json_loads)

    app.add_route("/api/v1/users", UsersResource())
    app.add_route(f"/api/v1/users/{{user_id:{ID}}}", UserResource())
    app.add_route(f"/api/v1/users/{{user_id:{ID}}}/followers", FollowersResource())
    app.add_route("/api/v1/subscriptions", SubscriptionsResource())
    idempotent = idempotency.IdempotentRequests(ttl_hours=settings.IDEMPOTENCY_KEY_TTL_H)
    app.add_route("/api/v1/add-followers", AddFollowersResource(intake=intake, idempotent=idempotent))
    app.add_route("/api/v1/jobs", JobsResource())
    app.add_route(f"/api/v1/jobs/{{job_id:{ID}}}", JobResource(relay=actors.relay))
    app.add_route("/api/v1/dead-letters", DeadLettersResource())
    app.add_route("/api/v1/dead-letters/{message_id}", DeadLetterResource())
    app.add_route("/api/v1/dead-letters/{message_id}/replay", DeadLetterReplayResource())
    app.add_route("/api/v1/queues", QueuesResource())
    app.add_route("/api/v1/workers", WorkersResource())
    # A connection of its own: a relay waiting on a slow broker does not hold up /health.
    broker_check = Publisher(url=settings.RABBITMQ_URL, timeout=settings.BROKER_TIMEOUT_S, batch_size=1)
    app.add_route("/health", HealthResource(publisher=broker_check))
    app.add_route("/metrics", MetricsResource(metrics_dir or settings.API_METRICS_DIR))
    app.add_route("/openapi.json", OpenApiResource(api_token=api_token))
    # The console: HTML pages, left out of openapi.json (tests/test_openapi.py says so).
    app.add_route("/console", OverviewPage())
    app.add_route("/console/jobs", JobsPage())
    app.add_route(f"/console/jobs/{{job_id:{ID}}}", JobPage())
    app.add_route(f"/console/jobs/{{job_id:{ID}}}/cancel", CancelJobAction(relay=actors.relay))
    app.add_route("/console/dead-letters", DeadLettersPage())
    app.add_route("/console/dead-letters/{message_id}/{action}", DeadLetterAction())
    lab_reports_dir = lab_reports_dir or settings.LAB_REPORTS_DIR
    app.add_route("/console/lab", LabPage(lab_reports_dir))
    app.add_route("/console/lab/{name}", LabReport(lab_reports_dir))
    app.add_route("/console/login", LoginResource(sessions=sessions))
    app.add_route("/console/logout", LogoutResource())
    app.add_static_route("/console/static", str(STATIC_DIR))
    return app


app = create_app()
