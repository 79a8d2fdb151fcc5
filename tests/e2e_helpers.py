"""Shared pieces of the end-to-end tests."""

import itertools
import os

_counter = itertools.count()


def unique(prefix):
    """A login prefix no other test (or earlier run on this database) uses."""
    return f"{prefix}{os.getpid() % 10000}x{next(_counter)}"


def create_user(stack, login, age=30):
    response = stack.post("/api/v1/users", json={"login": login, "password": "pw", "age": age})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def submit_async(stack, user_id, followers_login, count):
    """POST an async add-followers request; returns its 202 body."""
    response = stack.post("/api/v1/add-followers", json={"userId": user_id, "followersLogin": followers_login,
                                                         "count": count, "async": 1})
    assert response.status_code == 202, response.text
    return response.json()
