"""Hostile HTTP input against a real gunicorn: every refusal is a 4xx with a
clear JSON error (as openapi.json documents it), never a 5xx, never a stack
trace; and the service is still healthy afterwards."""

import json

import pytest
import requests

from harness import Stack
from tests.api_helpers import assert_clean_4xx, assert_conforms, raw_http
from tests.e2e_helpers import create_user, unique

# Every test here starts the real processes (or a browser): -m 'not slow' skips them.
pytestmark = pytest.mark.slow

MAX_BODY_BYTES = 32768
ADD = "/api/v1/add-followers"
USERS = "/api/v1/users"


@pytest.fixture(scope="module")
def stack():
    with Stack("hostile", env={"MAX_BODY_BYTES": str(MAX_BODY_BYTES), "PASSWORD_HASH_COST": "1024"}) as stack:
        stack.reset()
        log = stack.log_dir / "api.log"
        stack.log_offset = log.stat().st_size if log.exists() else 0
        stack.start_api()
        yield stack


@pytest.fixture(scope="module")
def user_id(stack):
    return create_user(stack, unique("victim"))


def post_raw(stack, path, data, content_type="application/json", **kwargs):
    return stack.post(path, data=data, headers={"Content-Type": content_type}, **kwargs)


# --- Malformed bodies --------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{nope", b"", b"{", b'{"userId": 1,}', b'{"a": 1} trailing', b"\xff\xfe\x00{", b"[1, 2]", b'"a string"',
     b"null", b"1" * 5000, b'{"count": ' + b"9" * 5000 + b"}", b'{"userId": NaN}', b'{"userId": Infinity}',
     b'{"a": ' * 3000 + b"1" + b"}" * 3000],
    ids=["broken", "empty", "unclosed", "trailing-comma", "garbage-after", "not-utf8", "array", "string", "null",
         "5000-digit-number", "5000-digit-field", "nan", "infinity", "nested-3000-deep"],
)
def test_malformed_json_is_400(stack, body):
    assert_clean_4xx(post_raw(stack, ADD, body), 400, ADD)


@pytest.mark.parametrize(
    "body, content_type",
    [(b"userId=%ff%fe&count=1", "application/x-www-form-urlencoded"),
     (b"userId=1&userId=2&followersLogin=a&count=1", "application/x-www-form-urlencoded"),
     (b"--x\r\nContent-Disposition: form-data; name=\"userId\"\r\n\r\n1", "multipart/form-data; boundary=x"),
     (b"not multipart at all", "multipart/form-data; boundary=x"),
     (b"--x--\r\n", "multipart/form-data"),
     (b"--x\r\nContent-Disposition: form-data; name=\"followersLogin\"\r\nContent-Type: text/plain; charset=nope"
      b"\r\n\r\nabc\r\n--x--\r\n", "multipart/form-data; boundary=x")],
    ids=["bad-percent-escapes", "repeated-field", "unterminated-multipart", "not-multipart", "no-boundary",
         "unknown-charset"],
)
def test_malformed_forms_are_400(stack, body, content_type):
    assert_clean_4xx(post_raw(stack, ADD, body, content_type), 400, ADD)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/octet-stream",
                                          "image/png", "application/json-patch+json", "nonsense"])
def test_wrong_content_types_are_415(stack, content_type):
    response = post_raw(stack, ADD, b'{"userId": 1, "followersLogin": "a", "count": 1}', content_type)
    body = assert_clean_4xx(response, 415, ADD)
    assert "media type" in body["description"]


# --- Size limits -------------------------------------------------------------


def test_a_body_over_the_limit_is_413_unread(stack):
    # 100 MB announced, a few bytes sent: the answer comes without the body.
    status, headers, payload = raw_http(
        stack.port, b"POST /api/v1/add-followers HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                    b"Content-Length: 100000000\n", b'{"userId": 1')
    assert status == 413 and headers["content-type"].startswith("application/json")
    assert json.loads(payload)["error"] == "body too large"


def test_a_body_at_the_limit_is_read(stack, user_id):
    login = unique("lim")
    body = json.dumps({"userId": user_id, "followersLogin": login, "count": 1, "pad": ""})
    body = body[:-2] + "x" * (MAX_BODY_BYTES - len(body)) + '"}'
    assert len(body) == MAX_BODY_BYTES
    response = post_raw(stack, ADD, body.encode())
    assert response.status_code == 200, response.text
    assert_conforms(response, ADD)


def chunked(data, size=1000):
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size])
                    for i in range(0, len(data), size)) + b"0\r\n\r\n"


def test_a_chunked_body_within_the_limit_works(stack, user_id):
    body = json.dumps({"userId": user_id, "followersLogin": unique("chunk"), "count": 2}).encode()
    status, _, payload = raw_http(stack.port, b"POST /api/v1/add-followers HTTP/1.1\nHost: x\n"
                                              b"Content-Type: application/json\nTransfer-Encoding: chunked\n",
                                  chunked(body, 7))
    assert (status, json.loads(payload)) == (200, {"created": 2, "skipped": 0})


def test_a_chunked_body_cannot_exceed_the_limit(stack):
    body = b'{"userId": 1, "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    status, headers, payload = raw_http(stack.port, b"POST /api/v1/add-followers HTTP/1.1\nHost: x\n"
                                                    b"Content-Type: application/json\nTransfer-Encoding: chunked\n",
                                        chunked(body))
    assert status == 413 and json.loads(payload)["success"] is False


# --- Wrong types, ranges ----------------------------------------------------


@pytest.mark.parametrize(
    "change, field",
    [({"userId": "1"}, "userId"), ({"count": "5"}, "count"), ({"async": "1"}, "async"),
     ({"followersLogin": 123}, "followersLogin"), ({"followersLogin": ["a"]}, "followersLogin"),
     ({"followersLogin": {"a": 1}}, "followersLogin"), ({"followersLogin": None}, "followersLogin"),
     ({"count": True}, "count"), ({"count": 1.5}, "count"), ({"count": [1]}, "count"), ({"count": None}, "count"),
     ({"userId": -1}, "userId"), ({"userId": 0}, "userId"), ({"userId": 2**31}, "userId"),
     ({"userId": 10**30}, "userId"), ({"userId": 1e308}, "userId"), ({"userId": -(10**30)}, "userId"),
     ({"count": -1}, "count"), ({"count": 10**100}, "count"), ({"count": 100_001}, "count"),
     ({"async": 2}, "async"), ({"async": -1}, "async"), ({"async": True}, "async"), ({"async": ""}, "async")],
)
def test_wrong_types_and_ranges_in_json_are_400_naming_the_field(stack, user_id, change, field):
    body = {"userId": user_id, "followersLogin": "x", "count": 1, **change}
    answer = assert_clean_4xx(stack.post(ADD, json=body), 400, ADD)
    assert list(answer["fields"]) == [field]


@pytest.mark.parametrize("value", ["-1", "99999999999", "9" * 200, "1e3", "0x10", "+1", "01", " 1", "1 ", "١",
                                   "1.5", "true", "NaN"])
def test_numbers_in_forms_are_plain_digits(stack, user_id, value):
    response = stack.post(ADD, data={"userId": user_id, "followersLogin": "x", "count": value})
    assert list(assert_clean_4xx(response, 400, ADD)["fields"]) == ["count"]


def test_digits_in_forms_and_integral_numbers_in_json_are_numbers(stack, user_id):
    response = stack.post(ADD, data={"userId": str(user_id), "followersLogin": unique("d"), "count": "2"})
    assert response.json() == {"created": 2, "skipped": 0}
    response = stack.post(ADD, json={"userId": float(user_id), "followersLogin": unique("d"), "count": 2.0})
    assert response.json() == {"created": 2, "skipped": 0}


@pytest.mark.parametrize("path", ["/api/v1/users/-1", "/api/v1/users/0", "/api/v1/users/2147483648",
                                  "/api/v1/users/" + "9" * 100, "/api/v1/users/1e3", "/api/v1/users/%00",
                                  "/api/v1/jobs/-5", "/api/v1/jobs/" + "9" * 100, "/api/v1/users/1/followers/x"])
def test_negative_and_enormous_ids_in_paths_are_404(stack, path):
    assert_clean_4xx(stack.get(path), 404, None)


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=1001", "limit=" + "9" * 50, "limit=abc",
                                   "offset=-1", "offset=" + "9" * 50, "limit=1&limit=2", "limit=1.5"])
def test_bad_paging_is_400(stack, user_id, query):
    assert_clean_4xx(stack.get(f"/api/v1/users/{user_id}/followers?{query}"), 400, "/api/v1/users/{user_id}/followers")


# --- Logins ------------------------------------------------------------------


@pytest.mark.parametrize("login", ["nul\x00byte", "new\nline", "tab\there", "bell\x07", "del\x7f", "c1\x85",
                                   "zero\u200bwidth", "rtl\u202eoverride", "bom\ufeff", "tag\U000e0041",
                                   "x" * 65, "😀" * 65, ""])
def test_control_characters_and_overlong_logins_are_400(stack, login):
    response = stack.post(USERS, json={"login": login, "password": "pw", "age": 1})
    assert list(assert_clean_4xx(response, 400, USERS)["fields"]) == ["login"]


def test_a_lone_surrogate_is_400(stack):
    response = post_raw(stack, USERS, b'{"login": "a\\ud800b", "password": "pw", "age": 1}')
    assert list(assert_clean_4xx(response, 400, USERS)["fields"]) == ["login"]


@pytest.mark.parametrize("login", ["émile", "日本語", "😀" * 64, "a\u0301", "Ωmega-" + "ß" * 10, "<script>",
                                   "' OR 1=1 --", "%s%n", "../../etc/passwd"])
def test_any_printable_unicode_login_round_trips(stack, login):
    login = f"{login}"[:58] + unique("")[-6:] if len(login) > 58 else login + unique("")
    response = stack.post(USERS, json={"login": login, "password": "pw", "age": 1})
    assert response.status_code == 201, response.text
    user = stack.get(response.headers["Location"])
    assert_conforms(user, "/api/v1/users/{user_id}")
    assert user.json()["login"] == login


def test_unicode_followers_login_via_form(stack, user_id):
    login = "фан" + unique("")
    response = stack.post(ADD, data={"userId": user_id, "followersLogin": login, "count": 2})
    assert response.json() == {"created": 2, "skipped": 0}
    followers = stack.get(f"/api/v1/users/{user_id}/followers?limit=1000").json()["items"]
    assert f"{login}_#1" in [user["login"] for user in followers]


# --- Routes and methods ------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api", "/api/v1", "/api/v1/userz", "/api/v1/users/1/x", "/../../etc/passwd",
                                  "/api/v1/add-followers/", "/%ff%fe", "/" + "a" * 4000])
def test_unknown_routes_are_404_in_json(stack, path):
    assert_clean_4xx(stack.get(path), 404, None)


@pytest.mark.parametrize("method, path, allowed", [
    ("DELETE", ADD, "POST"), ("PUT", ADD, "POST"), ("GET", ADD, "POST"), ("PATCH", USERS, "POST"),
    ("POST", "/health", "GET"), ("DELETE", "/api/v1/users/1", "GET"), ("PUT", "/api/v1/jobs/1", "GET"),
    ("PROPFIND", "/api/v1/subscriptions", "POST"), ("POST", "/metrics", "GET"), ("DELETE", "/openapi.json", "GET"),
])
def test_unknown_methods_are_405_with_allow(stack, method, path, allowed):
    response = requests.request(method, stack.url + path, timeout=10)
    assert_clean_4xx(response, 405, path)
    assert allowed in [m.strip() for m in response.headers["Allow"].split(",")]


def test_a_bad_content_length_is_refused(stack):
    status, _, _ = raw_http(stack.port, b"POST /api/v1/add-followers HTTP/1.1\nHost: x\nContent-Length: -5\n")
    assert 400 <= status < 500  # gunicorn refuses it before the app (its own plain-text 400)


# --- Afterwards --------------------------------------------------------------


def test_after_all_that_no_5xx_was_answered_and_the_service_is_healthy(stack):
    assert stack.get("/health").status_code == 200
    metrics = stack.get("/metrics").text
    answered = [line for line in metrics.splitlines() if line.startswith("followers_http_requests_total")]
    assert answered and not [line for line in answered if 'status="5' in line], answered
    with open(stack.api.log_path, "rb") as log:
        log.seek(stack.log_offset)
        assert b"Traceback" not in log.read()
