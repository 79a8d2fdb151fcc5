"""Schemathesis hooks for tests/test_openapi.py (SCHEMATHESIS_HOOKS).

JSON Schema cannot say that two fields differ, nor that a value is new on
every request. A user following themselves is valid by the schema and
refused by the server (400, as documented), and so is an Idempotency-Key
reused with another request (422, as documented). The requests are changed
here so the ids differ and every key is new; no check is changed."""

import uuid

import schemathesis

INT_MAX = 2**31 - 1


@schemathesis.hook
def before_call(ctx, case, kwargs):
    # Only a request meant to be valid gets a new key: a negative one (a
    # header left out on purpose, say) must reach the server as generated.
    meta = case.meta
    positive = meta is None or not meta.generation.mode.is_negative
    if positive and isinstance((case.headers or {}).get("Idempotency-Key"), str):
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    body = case.body
    if case.operation.path != "/api/v1/subscriptions" or not isinstance(body, dict):
        return
    author, follower = body.get("authorId"), body.get("followerId")
    if isinstance(author, (int, float)) and not isinstance(author, bool) and author == follower:
        body["followerId"] = int(author) + 1 if author < INT_MAX else int(author) - 1
