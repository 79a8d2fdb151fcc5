"""The HTTP API: ``gunicorn api:app``.

Resources are thin: they read and validate input (``validation``), call the
domain (``followers``) or submit a job (``actors.submit_job``), and shape the
answer. Errors of every kind become a JSON body
``{"success": false, "error": ..., "description"?: ..., "fields"?: {...}}``;
no stack trace ever reaches a client.
"""

import logging

import falcon
from peewee import InterfaceError, OperationalError

import actors
import followers
import settings
import validation
from actors import BrokerUnavailable
from db import Job, database
from validation import PG_INT_MAX

logger = logging.getLogger("followers.api")

ID = f"int(min=1, max={PG_INT_MAX})"  # out-of-range ids are unknown routes: 404


def read_form(req):
    """The request's fields as a dict, from JSON, an urlencoded form or a
    multipart form alike (the original's Postman requests are forms)."""
    media = req.get_media()
    if isinstance(media, falcon.media.multipart.MultipartForm):
        return {part.name: part.get_text() for part in media}
    return media


def error_body(error, description=None, **extra):
    body = {"success": False, "error": error}
    if description:
        body["description"] = description
    body.update(extra)
    return body


# --- Resources ---------------------------------------------------------------


class UsersResource:
    def on_post(self, req, resp):
        form = validation.validate(read_form(req), validation.NEW_USER)
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
        form = validation.validate(read_form(req), validation.NEW_SUBSCRIPTION)
        try:
            subscription = followers.subscribe(form["authorId"], form["followerId"])
        except ValueError as error:
            raise validation.Invalid({"followerId": str(error)}) from None
        resp.status = falcon.HTTP_201
        resp.media = subscription.to_dict()


class AddFollowersResource:
    def on_post(self, req, resp):
        form = validation.validate(read_form(req), validation.ADD_FOLLOWERS)
        user = followers.get_user(form["userId"])
        if not form["async"]:
            created, skipped = followers.add_followers_now(user, form["followersLogin"], form["count"])
            resp.media = {"created": created, "skipped": skipped}
            return
        job = actors.submit_job(user, form["followersLogin"], form["count"])
        resp.status = falcon.HTTP_202
        resp.location = f"/api/v1/jobs/{job.id}"
        resp.media = {"success": True, "jobId": job.id, "messages": job.messages}


class JobResource:
    def on_get(self, req, resp, job_id):
        job = Job.get_or_none(Job.id == job_id)
        if job is None:
            raise followers.NotFound(f"job {job_id} does not exist")
        resp.media = job.to_dict()


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


# --- Middleware and error handling -------------------------------------------


class BodyLimit:
    """Refuse bodies over ``max_bytes`` before anything reads them."""

    def __init__(self, *, max_bytes):
        self.max_bytes = max_bytes

    def process_request(self, req, resp):
        if req.content_length and req.content_length > self.max_bytes:
            raise falcon.HTTPContentTooLarge(
                title="body too large", description=f"request bodies are limited to {self.max_bytes} bytes"
            )


class DatabaseConnection:
    """Hand the request's connection back to the pool when it is done."""

    def process_response(self, req, resp, resource, req_succeeded):
        if not database.is_closed():
            database.close()


def serialize_http_error(req, resp, exception):
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body(exception.title, exception.description)


def _handler(status, error=None):
    def handle(req, resp, exception, params):
        resp.status = status
        if isinstance(exception, validation.Invalid):
            resp.media = error_body("invalid input", str(exception), fields=exception.fields)
        else:
            resp.media = error_body(error or str(exception), str(exception) if error else None)

    return handle


def handle_unexpected(req, resp, exception, params):
    if isinstance(exception, falcon.HTTPError):  # Falcon's own errors keep their status
        raise exception
    logger.exception("unhandled error on %s %s", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.media = error_body("internal error", "the error is logged on the server; try again")


def create_app(*, max_body_bytes=None):
    app = falcon.App(
        middleware=[BodyLimit(max_bytes=max_body_bytes or settings.MAX_BODY_BYTES), DatabaseConnection()]
    )
    app.set_error_serializer(serialize_http_error)
    # Falcon consults handlers most specific first, whatever the order here.
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(validation.Invalid, _handler(falcon.HTTP_400))
    app.add_error_handler(followers.NotFound, _handler(falcon.HTTP_404))
    app.add_error_handler(followers.Conflict, _handler(falcon.HTTP_409))
    app.add_error_handler(BrokerUnavailable, _handler(falcon.HTTP_503, "broker unavailable"))
    app.add_error_handler((OperationalError, InterfaceError), _handler(falcon.HTTP_503, "database unavailable"))

    app.add_route("/api/v1/users", UsersResource())
    app.add_route(f"/api/v1/users/{{user_id:{ID}}}", UserResource())
    app.add_route(f"/api/v1/users/{{user_id:{ID}}}/followers", FollowersResource())
    app.add_route("/api/v1/subscriptions", SubscriptionsResource())
    app.add_route("/api/v1/add-followers", AddFollowersResource())
    app.add_route(f"/api/v1/jobs/{{job_id:{ID}}}", JobResource())
    app.add_route("/health", HealthResource())
    return app


app = create_app()
