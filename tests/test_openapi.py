"""openapi.json and the code cannot drift: the app's routes and methods are
the document's paths and operations (but the console's HTML pages, each
checked to be one), the served document is the file, and schemathesis
(every default check) finds nothing against a live gunicorn."""

import os
import subprocess

import falcon.inspect
import pytest

import api
from harness import BIN, Stack
from tests.api_helpers import OPENAPI, ROOT, TOKEN, assert_conforms, is_console, openapi_path
from tests.e2e_helpers import create_user, unique

MAX_FOLLOWERS = 50  # keeps schemathesis's synchronous add-followers requests small


def app_operations(app):
    """{openapi path: {method}} of the app's own responders (not Falcon's
    default OPTIONS and 405 responders), the console's HTML pages left out."""
    return {
        openapi_path(route.path): {m.method for m in route.methods if not m.internal}
        for route in falcon.inspect.inspect_routes(app)
        if not is_console(route.path)
    }


def test_the_routes_left_out_of_the_document_are_the_consoles_html_pages():
    """The one exclusion of the drift test: routes under /console, every one
    a console resource, whose answers are HTML pages or redirects to them
    (tests/test_console.py reads them)."""
    app = api.create_app(api_token="")
    left_out = [route for route in falcon.inspect.inspect_routes(app) if is_console(route.path)]
    assert left_out and not any(is_console(path) for path in OPENAPI["paths"])
    for route in left_out:
        assert route.class_name in {"OverviewPage", "JobsPage", "JobPage", "CancelJobAction", "DeadLettersPage",
                                    "DeadLetterAction", "LoginResource", "LogoutResource", "LabPage",
                                    "LabReport"}, route.path
        assert route.source_info.split(":")[0].endswith(
            ("web/console.py", "web/console_auth.py", "web/lab_reports.py")), route.source_info


def document_operations(document):
    return {path: {method.upper() for method in item} for path, item in document["paths"].items()}


def test_every_route_and_method_is_in_the_document_and_nothing_else():
    assert app_operations(api.create_app(api_token="")) == document_operations(OPENAPI)


def test_every_operation_lists_its_errors():
    for path, item in OPENAPI["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= statuses, (method, path)
            if "{" in path:
                assert "404" in statuses, (method, path)
            if operation.get("security"):
                assert "401" in statuses, (method, path)
            # nginx's limit_conn covers every route (deploy/nginx.conf.template).
            assert "429" in statuses, (method, path)
    assert {"MethodNotAllowed", "NotFound"} <= set(OPENAPI["components"]["responses"])


@pytest.fixture(scope="module")
def stack():
    env = {"API_TOKEN": TOKEN, "MAX_FOLLOWERS_PER_REQUEST": str(MAX_FOLLOWERS), "PASSWORD_HASH_COST": "1024"}
    with Stack("openapi", env=env) as stack:
        stack.reset()
        stack.start_api()
        yield stack


@pytest.mark.slow  # the API as a gunicorn process
def test_the_served_document_is_the_file_with_this_servers_limits(stack):
    response = stack.get("/openapi.json")
    assert_conforms(response, "/openapi.json")
    served = response.json()
    count = served["components"]["schemas"]["AddFollowersJson"]["properties"]["count"]
    assert count["maximum"] == MAX_FOLLOWERS
    count["maximum"] = OPENAPI["components"]["schemas"]["AddFollowersJson"]["properties"]["count"]["maximum"]
    served["components"]["schemas"]["AddFollowersForm"]["properties"]["count"]["maximum"] = count["maximum"]
    assert served == OPENAPI


def test_without_a_token_the_document_asks_for_none():
    resource = api.OpenApiResource(api_token="")
    assert not any(op.get("security") for op in api._operations(resource.document))
    assert any(op.get("security") for op in api._operations(api.OpenApiResource(api_token="x").document))


@pytest.mark.slow  # the API as a gunicorn process
def test_every_operation_answers_as_documented(stack):
    """The successful answer of each operation, and its documented errors,
    checked against the document's schemas and headers."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    created = stack.post("/api/v1/users", json={"login": unique("doc"), "password": "pw", "age": 3})
    assert_conforms(created, "/api/v1/users")
    user_id = created.json()["id"]
    fan = stack.post("/api/v1/users", data={"login": unique("doc"), "password": "pw", "age": "4", "isActive": "false"})
    assert_conforms(fan, "/api/v1/users")
    answers = [
        (stack.post("/api/v1/users", json={"login": unique("doc"), "password": "pw"}), "/api/v1/users"),
        (stack.get(f"/api/v1/users/{user_id}"), "/api/v1/users/{user_id}"),
        (stack.post("/api/v1/subscriptions", json={"authorId": user_id, "followerId": fan.json()["id"]}),
         "/api/v1/subscriptions"),
        (stack.post("/api/v1/subscriptions", json={"authorId": user_id, "followerId": fan.json()["id"]}),
         "/api/v1/subscriptions"),
        (stack.post("/api/v1/add-followers", headers=auth, data={"userId": user_id, "followersLogin": unique("d"),
                                                               "count": 5}), "/api/v1/add-followers"),
        (stack.post("/api/v1/add-followers", json={"userId": user_id, "followersLogin": "x", "count": 1}),
         "/api/v1/add-followers"),
        (stack.post("/api/v1/add-followers", headers=auth, json={"userId": 2**31 - 1, "followersLogin": "x",
                                                               "count": 1}), "/api/v1/add-followers"),
        (stack.get(f"/api/v1/users/{user_id}/followers?limit=2&offset=1"), "/api/v1/users/{user_id}/followers"),
        (stack.get("/health"), "/health"),
        (stack.get("/metrics"), "/metrics"),
    ]
    queued = stack.post("/api/v1/add-followers", headers=auth, json={"userId": user_id, "followersLogin": unique("q"),
                                                                    "count": 3, "async": 1})
    answers += [(queued, "/api/v1/add-followers"), (stack.get(queued.headers["Location"]), "/api/v1/jobs/{job_id}")]
    assert [response.status_code for response, _ in answers] == [400, 200, 201, 409, 200, 401, 404, 200, 200, 200,
                                                                  202, 200]
    for response, path in answers:
        assert_conforms(response, path)


@pytest.mark.slow  # the API as a gunicorn process
def test_schemathesis_finds_no_failure(stack, artifacts):
    # Users 1.. exist, so that subscriptions and add-followers reach more than 404.
    for _ in range(3):
        create_user(stack, unique("st"))
    report = artifacts / "schemathesis.txt"
    result = subprocess.run(
        [str(BIN / "schemathesis"), "run", f"{stack.url}/openapi.json",
         # One worker: CPython 3.11's compile() is not thread-safe (gh-106905), and schemathesis compiles.
         "--max-examples", "30", "--seed", "20261128", "--request-timeout", "30", "--workers", "1",
         "--header", f"Authorization: Bearer {TOKEN}", "--no-color",
         # DELETE /api/v1/jobs/{id} cancels a job, which stays readable as cancelled (the design);
         # the check that a deleted resource answers 404 does not apply to it, and to nothing else here.
         "--exclude-checks", "use_after_free"],
        cwd=artifacts, capture_output=True, text=True, timeout=300,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.openapi_hooks", "PYTHONPATH": str(ROOT)},
    )
    report.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"schemathesis failed (full report: {report}):\n{result.stdout[-6000:]}"
    # Every operation but the document's own, which schemathesis leaves out.
    tested = sum(len(item) for item in OPENAPI["paths"].values()) - 1
    assert f"Tested: {tested}" in result.stdout, result.stdout[-3000:]
