"""The HTTP API: ``gunicorn api:app``.

Resources are thin: they read and validate input (``validation``), call the
domain (``followers``) or submit a job (``actors.submit_job``), and shape the
answer. Errors of every kind become a JSON body
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
from db import database
from validation import PG_INT_MAX
from web import errors
from web.console import CancelJobAction, DeadLetterAction, DeadLettersPage, JobPage, JobsPage, OverviewPage
from web.console_auth import ConsoleAccess, LoginResource, LogoutResource, Sessions
from web.dead_letters import DeadLetterReplayResource, DeadLetterResource, DeadLettersResource
from web.jobs import JobResource, JobsResource
from web.metrics import MetricsResource, RequestMetrics
from web.pages import STATIC_DIR
from web.queues import QueuesResource
from web.workers import WorkersResource
from web.middleware import BearerToken, BodyLimit, DatabaseConnection

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
        query = followers.get_user(user_id).followers()
        items = query.limit(page["limit"]).offset(page["offset"])
        resp.media = {"items": [user.to_dict() for user in items], "total": query.count()}


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

    def on_post(self, req, resp):
        form = validate_body(req, validation.ADD_FOLLOWERS)
        if not form["async"]:
            user = followers.get_user(form["userId"])
            created, skipped = followers.add_followers_now(user, form["followersLogin"], form["count"])
            resp.media = {"created": created, "skipped": skipped}
            return
        job = actors.submit_job(form["userId"], form["followersLogin"], form["count"])
        resp.status = falcon.HTTP_202
        resp.location = f"/api/v1/jobs/{job.id}"
        resp.media = {"success": True, "jobId": job.id, "messages": job.messages}


class HealthResource:
    def on_get(self, req, resp):
        checks = {"database": "ok", "broker": "ok"}
        try:
            database.execute_sql("SELECT 1")
        except (OperationalError, InterfaceError) as error:
            checks["database"] = f"down: {str(error).strip()}"
        try:
            actors.publisher.ping()
        except BrokerUnavailable as error:
            checks["broker"] = f"down: {error}"
        healthy = all(value == "ok" for value in checks.values())
        resp.status = falcon.HTTP_200 if healthy else falcon.HTTP_503
        resp.media = {"status": "ok" if healthy else "unavailable", **checks}


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


def create_app(*, max_body_bytes=None, api_token=None, metrics_dir=None):
    api_token = settings.API_TOKEN if api_token is None else api_token
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
    app.req_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(loads=_json_loads)

    app.add_route("/api/v1/users", UsersResource())
    app.add_route(f"/api/v1/users/{{user_id:{ID}}}", UserResource())
    app.add_route(f"/api/v1/users/{{user_id:{ID}}}/followers", FollowersResource())
    app.add_route("/api/v1/subscriptions", SubscriptionsResource())
    app.add_route("/api/v1/add-followers", AddFollowersResource())
    app.add_route("/api/v1/jobs", JobsResource())
    app.add_route(f"/api/v1/jobs/{{job_id:{ID}}}", JobResource())
    app.add_route("/api/v1/dead-letters", DeadLettersResource())
    app.add_route("/api/v1/dead-letters/{message_id}", DeadLetterResource())
    app.add_route("/api/v1/dead-letters/{message_id}/replay", DeadLetterReplayResource())
    app.add_route("/api/v1/queues", QueuesResource())
    app.add_route("/api/v1/workers", WorkersResource())
    app.add_route("/health", HealthResource())
    app.add_route("/metrics", MetricsResource(metrics_dir or settings.API_METRICS_DIR))
    app.add_route("/openapi.json", OpenApiResource(api_token=api_token))
    # The console: HTML pages, left out of openapi.json (tests/test_openapi.py says so).
    app.add_route("/console", OverviewPage())
    app.add_route("/console/jobs", JobsPage())
    app.add_route(f"/console/jobs/{{job_id:{ID}}}", JobPage())
    app.add_route(f"/console/jobs/{{job_id:{ID}}}/cancel", CancelJobAction())
    app.add_route("/console/dead-letters", DeadLettersPage())
    app.add_route("/console/dead-letters/{message_id}/{action}", DeadLetterAction())
    app.add_route("/console/login", LoginResource(sessions=sessions))
    app.add_route("/console/logout", LogoutResource())
    app.add_static_route("/console/static", str(STATIC_DIR))
    return app


app = create_app()
