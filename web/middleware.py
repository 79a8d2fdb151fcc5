"""Request middleware: a body size limit, the bearer token, and handing the
database connection back to the pool."""

import hmac
import io

import falcon

from db import database


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413 before anything parses them.

    A body with a Content-Length is judged by its header, unread. A chunked
    body has no length: at most ``max_bytes + 1`` bytes of it are read, and
    what fits is handed on as an ordinary body with a Content-Length (Falcon
    would otherwise read a body without one as empty)."""

    def __init__(self, *, max_bytes):
        self.max_bytes = max_bytes

    def process_request(self, req, resp):
        if req.content_length is not None:
            if req.content_length > self.max_bytes:
                raise self._too_large()
            return
        if "chunked" not in (req.get_header("Transfer-Encoding") or "").lower():
            return
        body = req.stream.read(self.max_bytes + 1)
        if len(body) > self.max_bytes:
            raise self._too_large()
        req.env["wsgi.input"] = req.stream = io.BytesIO(body)
        req.env["CONTENT_LENGTH"] = str(len(body))

    def _too_large(self):
        return falcon.HTTPContentTooLarge(
            title="body too large", description=f"request bodies are limited to {self.max_bytes} bytes"
        )


class BearerToken:
    """With a token set, the methods a resource lists in ``token_required``
    need ``Authorization: Bearer <token>``; without one everything is open."""

    def __init__(self, token):
        self.token = token.encode() if token else None

    def process_resource(self, req, resp, resource, params):
        if self.token is None or req.method not in getattr(resource, "token_required", ()):
            return
        scheme, _, credentials = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise falcon.HTTPUnauthorized(
                title="unauthorized",
                description="this operation needs an 'Authorization: Bearer <token>' header",
                challenges=["Bearer"],
            )
        if not hmac.compare_digest(credentials.strip().encode(), self.token):
            raise falcon.HTTPUnauthorized(
                title="unauthorized",
                description="the bearer token is wrong",
                challenges=['Bearer error="invalid_token"'],
            )


class DatabaseConnection:
    """Hand the request's connection back to the pool when it is done."""

    def process_response(self, req, resp, resource, req_succeeded):
        if not database.is_closed():
            database.close()
