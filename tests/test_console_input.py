"""Hostile input to the console and the dead-letter API, in process
(falcon's TestClient on the real app and the tests' database): ids and
form fields PostgreSQL or an encoder cannot take, redirects that would
leave the console, a notice that would show a link's words, the cookie
behind a proxy. Each was a 500 or a broken promise, found by a review."""

import re
import urllib.parse

import dramatiq
import jsonschema_rs
import pytest

import followers
import jobs
import settings
from tests.api_helpers import OPENAPI
from web.console_auth import COOKIE

TOKEN = "console-input-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(app_client):
    return app_client(api_token=TOKEN)


def login(client):
    """(cookie, csrf) of a fresh session."""
    answer = client.simulate_post("/console/login", body=f"token={TOKEN}&next=/console", headers=FORM)
    assert answer.status_code == 303
    cookie = answer.cookies[COOKIE].value
    page = client.simulate_get("/console", headers={"Cookie": f"{COOKIE}={cookie}"})
    return cookie, re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


@pytest.mark.parametrize("method, path", [("DELETE", "/api/v1/dead-letters/a%00b"),
                                          ("POST", "/api/v1/dead-letters/a%00b/replay")])
def test_a_dead_letter_id_with_a_nul_is_not_found(client, method, path):
    answer = client.simulate_request(method, path, headers=AUTH)
    assert answer.status_code == 404, answer.text
    assert answer.json == {"success": False, "error": "no dead letter a\\x00b is recorded"}


@pytest.mark.parametrize("action", ["replay", "purge"])
def test_the_consoles_dead_letter_buttons_say_missing_for_an_id_with_a_nul(client, action):
    cookie, csrf = login(client)
    answer = client.simulate_post(f"/console/dead-letters/a%00b/{action}", body=f"csrf={csrf}",
                                  headers={"Cookie": f"{COOKIE}={cookie}", **FORM})
    assert answer.status_code == 303, answer.text
    assert "notice=missing" in answer.headers["Location"]


def test_a_csrf_field_with_a_lone_surrogate_is_refused(client):
    cookie, _ = login(client)
    answer = client.simulate_post("/console/logout", body='{"csrf": "\\ud800"}',
                                  headers={"Cookie": f"{COOKIE}={cookie}", **JSON})
    assert answer.status_code == 403, answer.text


def test_a_login_token_with_a_lone_surrogate_is_refused(client):
    answer = client.simulate_post("/console/login", body='{"token": "\\ud800"}', headers=JSON)
    assert answer.status_code == 401, answer.text


@pytest.mark.parametrize("token, status", [("wrong", 401), (TOKEN, 303)])
def test_a_login_next_with_a_lone_surrogate_goes_to_the_console(client, token, status):
    answer = client.simulate_post("/console/login", body=f'{{"token": "{token}", "next": "/console/\\ud800"}}',
                                  headers=JSON)
    assert answer.status_code == status, answer.text
    if status == 303:
        assert answer.headers["Location"] == "/console"


@pytest.mark.parametrize("target", ["/console/../api/v1/jobs", "/console/%2e%2e/api/v1/jobs",
                                    "/console/jobs/../../metrics", "/consolex"])
def test_a_login_next_never_leaves_the_console_by_dot_segments(client, target):
    answer = client.simulate_post("/console/login", body=urllib.parse.urlencode({"token": TOKEN, "next": target}),
                                  headers=FORM)
    assert answer.status_code == 303
    resolved = urllib.parse.urljoin("http://host/console/", answer.headers["Location"])
    assert resolved == "http://host/console" or resolved.startswith("http://host/console/"), resolved


def test_a_login_next_inside_the_console_is_kept(client):
    answer = client.simulate_post("/console/login", body=urllib.parse.urlencode(
        {"token": TOKEN, "next": "/console/jobs?status=failed"}), headers=FORM)
    assert answer.headers["Location"] == "/console/jobs?status=failed"


def test_the_cookie_is_secure_behind_an_https_proxy_that_also_sends_forwarded(client):
    answer = client.simulate_post("/console/login", body=f"token={TOKEN}", headers={
        **FORM, "X-Forwarded-Proto": "https", "Forwarded": "for=203.0.113.7"})
    assert answer.status_code == 303
    assert "Secure" in answer.headers["Set-Cookie"]


def test_a_notice_never_shows_words_from_the_link(client):
    cookie, _ = login(client)
    user = followers.create_user("noticed", "secret", 30)
    job_id = jobs.create_job(user.id, "fan", 5).id
    page = client.simulate_get(f"/console/jobs/{job_id}?notice=cancelled&id=0.+Call+us+on+555-0100",
                               headers={"Cookie": f"{COOKIE}={cookie}"})
    assert page.status_code == 200 and "Call us" not in page.text
    page = client.simulate_get(f"/console/jobs/{job_id}?notice=cancelled&id={job_id}",
                               headers={"Cookie": f"{COOKIE}={cookie}"})
    assert f"Job {job_id} is cancelled" in page.text


@pytest.mark.parametrize("actor, kwargs", [("add_followers", {"job_id": -1, "unit": 0}),
                                           ("add_followers", {"job_id": 7, "unit": -3}),
                                           ("add_followers", {"job_id": 2**40, "unit": 0}),
                                           ("split_job", {"job_id": 0})])
def test_a_dead_letter_of_a_message_naming_impossible_ids_is_listed_as_openapi_says(client, actor, kwargs):
    from actors.dead_letters import DeadLetters

    message = dramatiq.Message(queue_name=settings.QUEUE_NAME, actor_name=actor, args=(), kwargs=kwargs, options={})
    DeadLetters().after_nack(None, message)  # what a worker records (validation refuses the message at once)
    answer = client.simulate_get("/api/v1/dead-letters", headers=AUTH)
    assert answer.status_code == 200 and answer.json["total"] == 1
    (letter,) = answer.json["items"]
    assert (letter["jobId"], letter["unit"]) == (None, None)
    schema_ = {**OPENAPI["components"]["schemas"]["DeadLetters"], "components": OPENAPI["components"]}
    assert list(jsonschema_rs.Draft202012Validator(schema_).iter_errors(answer.json)) == []
