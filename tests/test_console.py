"""The console over HTTP, against a real gunicorn with API_TOKEN set: the
login form and its session cookie, CSRF-checked forms, escaping, headers;
and, in-process, the open console of a server without a token. (The
browser's view is tests/test_console_browser.py.)"""

import re

import falcon.testing
import pytest
import requests

import api
import followers
import jobs
from db import Job, JobUnit
from harness import Stack
from tests.api_helpers import TOKEN
from tests.e2e_helpers import create_user, submit_async, unique
from web.console_auth import COOKIE, Sessions

HOSTILE_LOGIN = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def stack():
    with Stack("console", env={"PASSWORD_HASH_COST": "1024"}, api_token=TOKEN) as stack:
        stack.reset()
        stack.start_api()
        yield stack


def get(stack, path, session=None, **kwargs):
    return (session or requests).get(stack.url + path, allow_redirects=False, timeout=10, **kwargs)


def post(stack, path, data=None, session=None):
    return (session or requests).post(stack.url + path, data=data, allow_redirects=False, timeout=10)


def logged_in(stack):
    session = requests.Session()
    response = post(stack, "/console/login", {"token": TOKEN, "next": "/console/jobs"}, session)
    assert response.status_code == 303 and response.headers["Location"] == "/console/jobs"
    return session


def csrf_of(html):
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@pytest.mark.parametrize("path", ["/console", "/console/jobs", "/console/jobs/1", "/console/dead-letters"])
def test_without_a_session_every_page_sends_to_the_login_form(stack, path):
    response = get(stack, path)
    assert response.status_code == 303
    assert response.headers["Location"] == "/console/login?next=" + requests.utils.quote(path, safe="")


def test_the_login_form_refuses_a_wrong_token(stack):
    page = get(stack, "/console/login?next=/console/jobs")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'name="next" value="/console/jobs"' in page.text
    for token in ("wrong", "", TOKEN + "x", TOKEN.upper()):
        response = post(stack, "/console/login", {"token": token})
        assert response.status_code == 401 and "not the server's API_TOKEN" in response.text
        assert COOKIE not in response.cookies


def test_the_session_cookie_is_signed_httponly_and_samesite_strict(stack):
    response = post(stack, "/console/login", {"token": TOKEN, "next": "/console"})
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/console" in cookie and "Max-Age=43200" in cookie
    assert "Secure" not in cookie  # plain http here; behind https (X-Forwarded-Proto) it is Secure
    value = response.cookies[COOKIE]
    assert get(stack, "/console", cookies={COOKIE: value}).status_code == 200
    nonce, expires, signature = value.split(".")
    forged = [f"{nonce}.{int(expires) + 1}.{signature}", f"{nonce}x.{expires}.{signature}", f"{nonce}.{expires}.",
              Sessions(token="another token", max_age=60).issue(), Sessions(token=TOKEN, max_age=-1).issue(), "x"]
    for cookie in forged:
        assert get(stack, "/console", cookies={COOKIE: cookie}).status_code == 303, cookie


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/console", "/api/v1/jobs", "javascript:x"])
def test_login_never_redirects_out_of_the_console(stack, target):
    response = post(stack, "/console/login", {"token": TOKEN, "next": target})
    assert response.status_code == 303 and response.headers["Location"] == "/console"


def test_pages_are_html_with_a_strict_content_security_policy(stack):
    session = logged_in(stack)
    job_id = submit_async(stack, create_user(stack, unique("c")), unique("p"), 5)["jobId"]
    for path in ("/console", "/console/jobs", f"/console/jobs/{job_id}", "/console/dead-letters",
                 "/console/jobs?status=queued"):
        response = get(stack, path, session)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html"), path
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["Cache-Control"] == "no-store"
        assert "<script>" not in response.text and " style=" not in response.text  # nothing inline
    assert get(stack, "/console/jobs/999999", session).status_code == 404
    script = get(stack, "/console/static/console.js")
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    assert get(stack, "/console/static/console.css").status_code == 200


def test_a_form_without_its_csrf_token_changes_nothing(stack):
    session = logged_in(stack)
    job_id = submit_async(stack, create_user(stack, unique("c")), unique("f"), 5)["jobId"]
    page = get(stack, f"/console/jobs/{job_id}", session)
    for data in (None, {}, {"csrf": ""}, {"csrf": "forged"}, {"csrf": csrf_of(page.text) + "x"}):
        response = post(stack, f"/console/jobs/{job_id}/cancel", data, session)
        assert response.status_code == 403 and response.json()["error"] == "forbidden", data
    # Another session's token is no good either.
    other = logged_in(stack)
    assert post(stack, f"/console/jobs/{job_id}/cancel", {"csrf": csrf_of(page.text)}, other).status_code == 403
    # Nor the right token without the session (a forged cross-site post carries no cookie).
    assert post(stack, f"/console/jobs/{job_id}/cancel", {"csrf": csrf_of(page.text)}).status_code == 303
    assert stack.get(f"/api/v1/jobs/{job_id}").json()["status"] == "queued"


def cancel_form(page):
    """The job page's cancel form tag (hidden unless the job is cancellable)."""
    return re.search(r'<form[^>]*data-field="cancel"[^>]*>', page).group()


def test_the_cancel_button_cancels_and_says_so(stack):
    session = logged_in(stack)
    job_id = submit_async(stack, create_user(stack, unique("c")), unique("b"), 5)["jobId"]
    queued = get(stack, f"/console/jobs/{job_id}", session).text
    csrf = csrf_of(queued)
    assert not cancel_form(queued).endswith("hidden>")  # the button shown: the job is cancellable
    response = post(stack, f"/console/jobs/{job_id}/cancel", {"csrf": csrf}, session)
    assert response.status_code == 303 and response.headers["Location"].startswith(f"/console/jobs/{job_id}?")
    page = get(stack, response.headers["Location"], session).text
    assert f"Job {job_id} is cancelled" in page and 'data-status="cancelled"' in page
    assert cancel_form(page).endswith("hidden>")
    assert stack.get(f"/api/v1/jobs/{job_id}").json()["status"] == "cancelled"
    again = get(stack, post(stack, f"/console/jobs/{job_id}/cancel", {"csrf": csrf}, session).headers["Location"],
                session)
    assert f"Job {job_id} is cancelled" in again.text  # idempotent, as the API
    finished = submit_async(stack, create_user(stack, unique("c")), unique("b"), 0)["jobId"]
    response = post(stack, f"/console/jobs/{finished}/cancel", {"csrf": csrf}, session)
    assert "is finished already" in get(stack, response.headers["Location"], session).text


def test_a_dead_letter_button_for_one_that_is_gone_says_so(stack):
    session = logged_in(stack)
    csrf = csrf_of(get(stack, "/console", session).text)
    for action in ("replay", "purge"):
        response = post(stack, f"/console/dead-letters/no-such-id/{action}", {"csrf": csrf}, session)
        assert response.status_code == 303
        assert "is not there any more" in get(stack, response.headers["Location"], session).text
    assert post(stack, "/console/dead-letters/x/explode", {"csrf": csrf}, session).status_code == 404


def test_what_users_typed_is_shown_as_text_never_as_markup(stack):
    session = logged_in(stack)
    job_id = submit_async(stack, create_user(stack, unique("c")), HOSTILE_LOGIN, 3)["jobId"]
    for path in ("/console/jobs", f"/console/jobs/{job_id}"):
        html = get(stack, path, session).text
        assert HOSTILE_LOGIN not in html and "&lt;img src=x onerror=alert(1)&gt;" in html, path
    notice = get(stack, f"/console/jobs/{job_id}?notice=cancelled&id=<b>boo</b>", session).text
    # Not an id a notice may name: not shown at all, even escaped (tests/test_console_input.py).
    assert "boo" not in notice and "Job ? is cancelled" in notice
    assert "Call us" not in get(stack, f"/console/jobs/{job_id}?notice=Call+us", session).text


def test_logout_ends_the_session(stack):
    session = logged_in(stack)
    csrf = csrf_of(get(stack, "/console", session).text)
    response = post(stack, "/console/logout", {"csrf": csrf}, session)
    assert response.status_code == 303 and response.headers["Location"] == "/console/login"
    assert get(stack, "/console", session).status_code == 303


# --- Without API_TOKEN: open, as the API, and still CSRF-checked ------------------------------


def test_without_a_token_the_console_is_open_and_its_forms_still_need_their_csrf_token(test_database):
    # No `db` fixture: the app hands its connection back after each request, as in gunicorn.
    client = falcon.testing.TestClient(api.create_app(api_token=""))
    assert client.simulate_get("/console/login").headers["Location"] == "/console"
    job_id = create_job_in_process()
    page = client.simulate_get(f"/console/jobs/{job_id}")
    assert page.status_code == 200 and "Log out" not in page.text
    cookie = page.cookies[COOKIE]
    assert cookie.http_only and cookie.same_site == "Strict"
    cancel = f"/console/jobs/{job_id}/cancel"
    assert client.simulate_post(cancel, headers={"Cookie": f"{COOKIE}={cookie.value}"}).status_code == 403
    response = client.simulate_post(cancel, body=f"csrf={csrf_of(page.text)}", headers={
        "Cookie": f"{COOKIE}={cookie.value}", "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 303
    assert Job.get_by_id(job_id).status == "cancelled"


def test_the_cancel_button_shows_on_an_ordered_job_a_dead_letter_holds(test_database):
    """Failed, yet cancellable: cancelling it lets its user's next ordered jobs run."""
    client = falcon.testing.TestClient(api.create_app(api_token=""))
    user = followers.create_user(unique("held"), "pw", 1)
    held, unordered = (jobs.create_job(user.id, unique("fan"), 2, ordered=ordered).id for ordered in (True, False))
    for job_id in (held, unordered):
        JobUnit.mark_failed(job_id, 0, "RuntimeError: boom")
    page = client.simulate_get(f"/console/jobs/{held}").text
    assert 'data-status="failed"' in page and not cancel_form(page).endswith("hidden>")
    assert cancel_form(client.simulate_get(f"/console/jobs/{unordered}").text).endswith("hidden>")


def create_job_in_process():
    user = followers.create_user(unique("open"), "pw", 1)
    return jobs.create_job(user.id, "fan", 5).id


# --- The Lab page: the lab's reports, the peers' matrix first ---------------------------------


def test_the_lab_page_links_the_compare_matrix_and_serves_it_without_script(test_database, tmp_path):
    client = falcon.testing.TestClient(api.create_app(api_token="", lab_reports_dir=str(tmp_path)))
    page = client.simulate_get("/console/lab")
    assert page.status_code == 200
    assert "not yet: run <code>python -m lab compare</code>" in page.text
    assert 'href="/console/lab/compare.html"' not in page.text
    missing = client.simulate_get("/console/lab/compare.html")
    assert missing.status_code == 404 and "python -m lab compare writes it" in missing.text

    (tmp_path / "compare.html").write_text("<!doctype html><table class=matrix><td>SOLVED</td></table>")
    page = client.simulate_get("/console/lab")
    assert 'href="/console/lab/compare.html"' in page.text
    assert "not yet: run <code>python -m lab compare" not in page.text
    assert '<a href="/console/lab" aria-current="page">Lab</a>' in page.text
    report = client.simulate_get("/console/lab/compare.html")
    assert report.status_code == 200 and "SOLVED" in report.text
    assert "script-src" not in report.headers["Content-Security-Policy"]  # default-src 'none': no script at all
    assert report.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_the_lab_serves_only_its_own_reports(test_database, tmp_path):
    (tmp_path / "secret.html").write_text("not a report")
    client = falcon.testing.TestClient(api.create_app(api_token="", lab_reports_dir=str(tmp_path / "lab")))
    for name in ("secret.html", "..%2Fsecret.html", "latest.html"):
        response = client.simulate_get(f"/console/lab/{name}")
        assert response.status_code == 404 and "not a report" not in response.text


def test_the_lab_page_needs_a_login_when_the_api_has_a_token(stack):
    assert get(stack, "/console/lab").status_code == 303
    assert get(stack, "/console/lab/compare.html").status_code == 303
    assert get(stack, "/console/lab", logged_in(stack)).status_code == 200
