"""Schemathesis hooks for tests/test_openapi.py (SCHEMATHESIS_HOOKS).

JSON Schema cannot say that two fields differ: a user following themselves
is valid by the schema and refused by the server (400, as documented). The
request is changed here so the ids differ; no check is changed."""

import schemathesis

INT_MAX = 2**31 - 1


@schemathesis.hook
def before_call(ctx, case, kwargs):
    body = case.body
    if case.operation.path != "/api/v1/subscriptions" or not isinstance(body, dict):
        return
    author, follower = body.get("authorId"), body.get("followerId")
    if isinstance(author, (int, float)) and not isinstance(author, bool) and author == follower:
        body["followerId"] = int(author) + 1 if author < INT_MAX else int(author) - 1
