"""End to end: real gunicorn and ``dramatiq actors --processes 2`` on the
tests' own database and queue, driven over HTTP like a user would."""

import math
import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from harness import Stack
from tests.e2e_helpers import create_user, submit_async, unique

# Every test here starts the real processes (or a browser): -m 'not slow' skips them.
pytestmark = pytest.mark.slow

FOLLOWERS_PER_MESSAGE = 7


@pytest.fixture(scope="module")
def stack():
    with Stack(
        "e2e",
        env={
            "FOLLOWERS_PER_MESSAGE": str(FOLLOWERS_PER_MESSAGE),
            "MAX_MESSAGES_PUBLISHED_INLINE": "5",
            "PASSWORD_HASH_COST": "1024",
        },
        threads=2,
    ) as stack:
        stack.reset()
        stack.start()
        yield stack


def count_followers(stack, user_id):
    return stack.get(f"/api/v1/users/{user_id}/followers?limit=1").json()["total"]


# --- Users and subscriptions ------------------------------------------------


def test_create_and_get_a_user_without_its_password(stack):
    login = unique("u")
    response = stack.post("/api/v1/users", json={"login": login, "password": "pw", "age": 30, "isActive": False})
    assert response.status_code == 201
    assert response.headers["Location"] == f"/api/v1/users/{response.json()['id']}"
    user = stack.get(response.headers["Location"]).json()
    assert user["login"] == login and user["isActive"] is False and user["age"] == 30
    assert not any("password" in key.lower() for key in user)


def test_a_taken_login_is_409(stack):
    login = unique("u")
    create_user(stack, login)
    response = stack.post("/api/v1/users", json={"login": login, "password": "pw", "age": 3})
    assert response.status_code == 409
    assert response.json()["success"] is False and login in response.json()["error"]


def test_invalid_user_is_400_naming_each_field(stack):
    response = stack.post("/api/v1/users", json={"login": "", "age": -1})
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"login", "password", "age"}


@pytest.mark.parametrize("path", ["/api/v1/users/999999", "/api/v1/users/0", "/api/v1/users/99999999999",
                                  "/api/v1/users/abc", "/api/v1/jobs/999999"])
def test_unknown_things_are_404_in_json(stack, path):
    response = stack.get(path)
    assert response.status_code == 404
    assert response.json()["success"] is False


def test_subscriptions(stack):
    author, fan = create_user(stack, unique("a")), create_user(stack, unique("f"))
    response = stack.post("/api/v1/subscriptions", json={"authorId": author, "followerId": fan})
    assert response.status_code == 201 and response.json()["followerId"] == fan
    assert stack.post("/api/v1/subscriptions", json={"authorId": author, "followerId": fan}).status_code == 409
    assert stack.post("/api/v1/subscriptions", json={"authorId": author, "followerId": 999999}).status_code == 404
    response = stack.post("/api/v1/subscriptions", json={"authorId": author, "followerId": author})
    assert response.status_code == 400 and "followerId" in response.json()["fields"]
    followers = stack.get(f"/api/v1/users/{author}/followers").json()
    assert followers["total"] == 1 and followers["items"][0]["id"] == fan


def test_followers_are_paged(stack):
    author = create_user(stack, unique("a"))
    login = unique("p")
    stack.post("/api/v1/add-followers", json={"userId": author, "followersLogin": login, "count": 5})
    page = stack.get(f"/api/v1/users/{author}/followers?limit=2&offset=3").json()
    assert page["total"] == 5 and [u["login"] for u in page["items"]] == [f"{login}_#3", f"{login}_#4"]
    assert stack.get(f"/api/v1/users/{author}/followers?limit=0").status_code == 400


def test_the_next_links_walk_every_follower_once(stack):
    author, login = create_user(stack, unique("a")), unique("n")
    stack.post("/api/v1/add-followers", json={"userId": author, "followersLogin": login, "count": 5})
    late = unique("late")
    stack.post("/api/v1/subscriptions", json={"authorId": author, "followerId": create_user(stack, late)})
    seen, url = [], f"/api/v1/users/{author}/followers?limit=2"
    while url:
        page = stack.get(url).json()
        assert page["total"] == 6
        seen += [user["login"] for user in page["items"]]
        url = page["next"]
    assert seen == [f"{login}_#{i}" for i in range(5)] + [late]
    by_offset = stack.get(f"/api/v1/users/{author}/followers?limit=3&offset=2").json()
    assert [user["login"] for user in by_offset["items"]] == [f"{login}_#{i}" for i in (2, 3, 4)]
    rest = stack.get(by_offset["next"]).json()  # an old client's next page is by cursor
    assert [user["login"] for user in rest["items"]] == [late] and rest["next"] is None


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "99999999999", "1e3"])
def test_a_bad_cursor_is_400_naming_it(stack, cursor):
    author = create_user(stack, unique("a"))
    response = stack.get(f"/api/v1/users/{author}/followers", params={"cursor": cursor})
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["cursor"]


# --- Add followers, synchronous --------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "urlencoded", "multipart"])
def test_sync_add_followers_in_every_encoding(stack, encoding):
    author = create_user(stack, unique("a"))
    fields = {"userId": str(author), "followersLogin": unique("s"), "count": "12", "async": "0"}
    if encoding == "json":
        response = stack.post("/api/v1/add-followers", json={**fields, "userId": author, "count": 12, "async": 0})
    elif encoding == "urlencoded":
        response = stack.post("/api/v1/add-followers", data=fields)
    else:
        response = stack.post("/api/v1/add-followers", files={k: (None, v) for k, v in fields.items()})
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 12, "skipped": 0}
    assert count_followers(stack, author) == 12


def test_repeating_a_sync_request_creates_nothing(stack):
    author = create_user(stack, unique("a"))
    body = {"userId": author, "followersLogin": unique("r"), "count": 10}
    stack.post("/api/v1/add-followers", json=body)
    assert stack.post("/api/v1/add-followers", json=body).json() == {"created": 0, "skipped": 10}
    assert count_followers(stack, author) == 10


def test_unknown_user_is_404_success_false(stack):
    response = stack.post("/api/v1/add-followers", json={"userId": 999999, "followersLogin": "x", "count": 1})
    assert response.status_code == 404
    assert response.json()["success"] is False


@pytest.mark.parametrize(
    "change, field",
    [({"count": 100_001}, "count"), ({"count": -1}, "count"), ({"followersLogin": "x" * 33}, "followersLogin"),
     ({"async": 2}, "async"), ({"userId": "abc"}, "userId"), ({"followersLogin": ""}, "followersLogin")],
)
def test_invalid_add_followers_is_400_naming_the_field(stack, change, field):
    body = {"userId": 1, "followersLogin": "x", "count": 1, **change}
    response = stack.post("/api/v1/add-followers", json=body)
    assert response.status_code == 400
    assert list(response.json()["fields"]) == [field]


def test_malformed_json_is_400(stack):
    response = stack.post("/api/v1/add-followers", data="{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["success"] is False


# --- Add followers, asynchronous -------------------------------------------


def test_async_job_goes_to_done(stack):
    author = create_user(stack, unique("a"))
    login = unique("q")
    response = stack.post("/api/v1/add-followers", data={"userId": author, "followersLogin": login,
                                                         "count": 30, "async": 1})
    assert response.status_code == 202
    body = response.json()
    assert body["success"] is True and body["messages"] == math.ceil(30 / FOLLOWERS_PER_MESSAGE)
    assert response.headers["Location"] == f"/api/v1/jobs/{body['jobId']}"
    job = stack.wait_job(body["jobId"])
    assert job["status"] == "done"
    assert (job["created"], job["skipped"], job["requested"]) == (30, 0, 30)
    assert job["messages"] == {"total": 5, "done": 5, "failed": 0}
    assert count_followers(stack, author) == 30


def test_a_large_job_is_split_by_a_worker(stack):
    # 100 followers / 7 per message = 15 messages > MAX_MESSAGES_PUBLISHED_INLINE (5)
    author = create_user(stack, unique("a"))
    body = submit_async(stack, author, unique("b"), 100)
    assert body["messages"] == 15
    job = stack.wait_job(body["jobId"])
    assert (job["status"], job["created"]) == ("done", 100)
    assert count_followers(stack, author) == 100


def test_health_is_ok(stack):
    response = stack.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok",
                               "outbox": {"pending": 0, "oldestAgeSeconds": None}}


def tcp_connections_to(pid, port):
    """Established TCP connections of process ``pid`` to remote ``port``
    (its sockets' inodes, found in /proc/net/tcp and tcp6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                remote_port, state, inode = int(fields[2].rsplit(":", 1)[1], 16), fields[3], fields[9]
                count += remote_port == port and state == "01" and inode in inodes
    return count


def test_many_clients_at_once_share_a_few_rabbitmq_connections(stack):
    """The API serves every client connection on a greenlet of its own
    (gunicorn's gevent worker): 60 clients, each on a new connection, 20
    at once, all checking RabbitMQ through /health, must not each open a
    connection to RabbitMQ (and leave it open)."""
    def health(_):
        return requests.get(f"{stack.url}/health", headers={"Connection": "close"}, timeout=10).json()

    (api_worker,) = stack.api.children()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(health, range(60)))
    assert {answer["broker"] for answer in answers} == {"ok"}
    # Its relay's publisher, Dramatiq's broker (the relay declares queues
    # through it) and /health's publisher.
    assert tcp_connections_to(api_worker, urlsplit(stack.rabbitmq_url.split(";")[0]).port or 5672) <= 3


def test_unknown_method_is_405_with_allow(stack):
    response = requests.delete(f"{stack.url}/api/v1/add-followers", timeout=5)
    assert response.status_code == 405 and "POST" in response.headers["Allow"]
    assert response.json()["success"] is False


# --- Idempotency-Key -----------------------------------------------------------


def post_keyed(stack, key, **body):
    return stack.post("/api/v1/add-followers", json=body, headers={"Idempotency-Key": key})


def test_a_replayed_async_request_returns_the_first_answer_and_creates_nothing(stack):
    author = create_user(stack, unique("idem"))
    key, login = unique("key-"), unique("i")
    first = post_keyed(stack, key, userId=author, followersLogin=login, count=10, **{"async": 1})
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    body = first.json()
    again = post_keyed(stack, key, userId=author, followersLogin=login, count=10, **{"async": 1})
    assert (again.status_code, again.json()) == (202, body)
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["Location"] == first.headers["Location"]
    assert stack.wait_job(body["jobId"])["created"] == 10
    assert count_followers(stack, author) == 10  # one job, not two


def test_a_replayed_sync_request_returns_the_first_answer(stack):
    author = create_user(stack, unique("idem"))
    login, key = unique("s"), unique("key-")
    first = post_keyed(stack, key, userId=author, followersLogin=login, count=3)
    assert first.json() == {"created": 3, "skipped": 0}
    again = post_keyed(stack, key, userId=author, followersLogin=login, count=3)
    assert again.json() == {"created": 3, "skipped": 0}  # the first answer, not "0 created, 3 skipped"
    assert again.headers["Idempotent-Replayed"] == "true"


def test_the_same_key_with_another_request_is_422(stack):
    author = create_user(stack, unique("idem"))
    key = unique("key-")
    assert post_keyed(stack, key, userId=author, followersLogin="a", count=1).status_code == 200
    response = post_keyed(stack, key, userId=author, followersLogin="a", count=2)
    assert response.status_code == 422
    assert response.json()["error"] == "idempotency key reused"
    assert "different request" in response.json()["description"]


def test_the_same_request_as_a_form_or_as_json_is_one_request(stack):
    author = create_user(stack, unique("idem"))
    login, key = unique("f"), unique("key-")
    form = stack.post("/api/v1/add-followers", data={"userId": author, "followersLogin": login, "count": 2},
                      headers={"Idempotency-Key": key})
    assert post_keyed(stack, key, userId=author, followersLogin=login, count=2).json() == form.json()


def test_concurrent_requests_with_one_key_make_one_job(stack):
    author = create_user(stack, unique("idem"))
    login, key = unique("c"), unique("key-")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post_keyed(stack, key, userId=author, followersLogin=login, count=5,
                                                     **{"async": 1}), range(8)))
    assert {response.status_code for response in answers} == {202}
    assert len({response.json()["jobId"] for response in answers}) == 1
    job_id = answers[0].json()["jobId"]
    assert stack.wait_job(job_id)["created"] == 5
    assert stack.get(f"/api/v1/jobs/{job_id + 1}").status_code == 404  # no second job


@pytest.mark.parametrize("key", ["", "a\tb", "é" * 3, "x" * 256])
def test_a_malformed_key_is_400_naming_the_header(stack, key):
    author = create_user(stack, unique("idem"))
    response = stack.post("/api/v1/add-followers", json={"userId": author, "followersLogin": "k", "count": 1},
                          headers={"Idempotency-Key": key.encode()})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["fields"]


def test_an_unknown_user_with_a_key_is_404_and_the_key_stays_free(stack):
    key = unique("key-")
    assert post_keyed(stack, key, userId=999_999, followersLogin="k", count=1, **{"async": 1}).status_code == 404
    author = create_user(stack, unique("idem"))  # a failed request kept no answer: the key runs anew
    assert post_keyed(stack, key, userId=author, followersLogin="k", count=1, **{"async": 1}).status_code == 202
