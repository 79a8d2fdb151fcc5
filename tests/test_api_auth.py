"""The bearer token: with API_TOKEN set, add-followers needs it (401 with
WWW-Authenticate otherwise); unset, the API is open."""

import pytest

from harness import Stack
from tests.api_helpers import TOKEN, assert_clean_4xx, assert_conforms
from tests.e2e_helpers import create_user, unique

# Every test here starts the real processes (or a browser): -m 'not slow' skips them.
pytestmark = pytest.mark.slow

ADD = "/api/v1/add-followers"


@pytest.fixture(scope="module")
def stack():
    with Stack("auth", env={"API_TOKEN": TOKEN, "PASSWORD_HASH_COST": "1024"}) as stack:
        stack.reset()
        stack.start_api()
        yield stack


def add_body(stack):
    return {"userId": create_user(stack, unique("a")), "followersLogin": unique("t"), "count": 3}


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer wrong",
     f"Token {TOKEN}", f"Bearer {TOKEN.upper()}", "Bearer \u00e9t\u00e9"],
)
def test_without_the_right_token_add_followers_is_401(stack, authorization):
    headers = {} if authorization is None else {"Authorization": authorization.encode("utf-8")}
    response = stack.post(ADD, json=add_body(stack), headers=headers)
    body = assert_clean_4xx(response, 401, ADD)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["error"] == "unauthorized" and "Bearer" in body["description"] + response.headers["WWW-Authenticate"]


def test_nothing_is_added_without_the_token(stack):
    body = add_body(stack)
    stack.post(ADD, json=body)
    followers = stack.get(f"/api/v1/users/{body['userId']}/followers").json()
    assert followers["total"] == 0


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_with_the_token_add_followers_works(stack, scheme):
    response = stack.post(ADD, data=add_body(stack), headers={"Authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200 and response.json() == {"created": 3, "skipped": 0}
    assert_conforms(response, ADD)


def test_the_token_is_checked_before_the_input(stack):
    assert_clean_4xx(stack.post(ADD, json={"userId": "nonsense"}), 401, ADD)


def test_other_operations_need_no_token(stack):
    user_id = create_user(stack, unique("o"))
    assert stack.get(f"/api/v1/users/{user_id}").status_code == 200
    assert stack.get("/health").status_code == 200


def test_the_served_document_asks_for_the_token(stack):
    operation = stack.get("/openapi.json").json()["paths"][ADD]["post"]
    assert operation["security"] == [{"bearerAuth": []}]


def test_unset_the_api_is_open():
    with Stack("auth_open", env={"API_TOKEN": "", "PASSWORD_HASH_COST": "1024"}) as open_stack:
        open_stack.reset()
        open_stack.start_api()
        response = open_stack.post(ADD, json=add_body(open_stack))
        assert response.status_code == 200 and response.json()["created"] == 3
        assert "security" not in open_stack.get("/openapi.json").json()["paths"][ADD]["post"]
