"""Every error a client sees is JSON:
``{"success": false, "error": ..., "description"?: ..., "fields"?: {...}}``.
No stack trace ever reaches a client; unexpected errors are logged."""

import logging

import falcon
from peewee import InterfaceError, OperationalError

import followers
import jobs
import validation
from actors import BrokerUnavailable
from ops.dead_letters import DeadLetterQueueBusy

from .intake import Backpressure, handle_backpressure

logger = logging.getLogger("followers.api")


def error_body(error, description=None, **extra):
    body = {"success": False, "error": error}
    if description:
        body["description"] = description
    body.update(extra)
    return body


def serialize_http_error(req, resp, exception):
    """Falcon's own errors (404 route, 405, 413, 415, malformed bodies, 401)."""
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


def register(app):
    app.set_error_serializer(serialize_http_error)
    # Falcon consults handlers most specific first, whatever the order here.
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(validation.Invalid, _handler(falcon.HTTP_400))
    app.add_error_handler(followers.NotFound, _handler(falcon.HTTP_404))
    app.add_error_handler(followers.Conflict, _handler(falcon.HTTP_409))
    app.add_error_handler(jobs.JobFinished, _handler(falcon.HTTP_409, "job finished"))
    app.add_error_handler(BrokerUnavailable, _handler(falcon.HTTP_503, "broker unavailable"))
    app.add_error_handler(Backpressure, handle_backpressure)
    app.add_error_handler(DeadLetterQueueBusy, _handler(falcon.HTTP_503, "dead-letter queue busy"))
    app.add_error_handler((OperationalError, InterfaceError), _handler(falcon.HTTP_503, "database unavailable"))
