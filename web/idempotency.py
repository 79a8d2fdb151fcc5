"""``Idempotency-Key`` on POST /api/v1/add-followers, as Stripe and the IETF
draft (draft-ietf-httpapi-idempotency-key-header) define it: the same key
with the same request returns the first answer and does nothing again; the
same key with another request is a 422; a key whose first request is still
running is a 409.

An asynchronous request claims its key, creates its job and records its
answer in ONE transaction, so a crash leaves either all three or none. A
synchronous request commits in several statements: its key is claimed
first and released if the request fails, so that a retry runs it again.
"""

import hashlib
import json
import re
import time

import falcon

import validation
from db import IdempotencyKey, database

HEADER = "Idempotency-Key"
_KEY = re.compile(r"[\x20-\x7e]{1,255}")


class KeyInUse(Exception):
    pass


class KeyMismatch(Exception):
    pass


def key_of(req):
    """The request's key, or None; a malformed key is a 400."""
    key = req.get_header(HEADER)
    if key is None:
        return None
    if not _KEY.fullmatch(key) or not key.strip():
        raise validation.Invalid({HEADER: "must be 1 to 255 printable ASCII characters"})
    return key


def request_hash(form):
    """The validated request, so that JSON and form encodings of the same
    fields are the same request."""
    return hashlib.sha256(json.dumps(form, sort_keys=True).encode()).hexdigest()


class IdempotentRequests:
    """Runs a request once per key and replays its answer.

    Parameters:
      ttl_hours(int): Keys are kept at least this long.
      expire_every(float): Seconds between sweeps of expired keys (per process).
    """

    def __init__(self, *, ttl_hours, expire_every=600):
        self.ttl_hours = ttl_hours
        self.expire_every = expire_every
        self._expired_at = 0.0

    def run(self, key, form, action, *, atomic):
        """(status, body, replayed) of ``action()`` -> (status, body), run
        at most once for this key and request."""
        self._expire()
        digest = request_hash(form)
        if atomic:
            with database.atomic():
                first = IdempotencyKey.claim(key, digest)
                if first is not None:
                    return (*self._replay(first, digest), True)
                status, body = action()
                IdempotencyKey.complete(key, status, body)
            return status, body, False
        with database.atomic():
            first = IdempotencyKey.claim(key, digest)
        if first is not None:
            return (*self._replay(first, digest), True)
        try:
            status, body = action()
            IdempotencyKey.complete(key, status, body)
        except BaseException:
            # Its answer not recorded, the key would read "still running"
            # until it expires; released, a retry runs the request again,
            # which adds nothing twice.
            IdempotencyKey.release(key)
            raise
        return status, body, False

    def _replay(self, first, digest):
        if first.request_hash != digest:
            raise KeyMismatch(f"this {HEADER} was used with a different request; use a new key for a new request")
        if first.status is None:
            raise KeyInUse(f"the first request with this {HEADER} is still running; retry shortly")
        return first.status, first.response

    def _expire(self):
        now = time.monotonic()
        if now - self._expired_at >= self.expire_every:
            self._expired_at = now
            IdempotencyKey.expire(older_than_hours=self.ttl_hours)


def register(app):
    def mismatch(req, resp, exception, params):
        raise falcon.HTTPUnprocessableEntity(title="idempotency key reused", description=str(exception))

    def in_use(req, resp, exception, params):
        raise falcon.HTTPConflict(title="request in progress", description=str(exception), headers={"Retry-After": "1"})

    app.add_error_handler(KeyMismatch, mismatch)
    app.add_error_handler(KeyInUse, in_use)
