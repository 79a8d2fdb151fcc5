"""nginx in front of gunicorn (deploy/nginx.conf.template), as a real nginx
from Debian's package runs it: slow clients and a flood from one address do
not take the API from the others, big bodies stop at nginx, nginx's own
refusals are JSON, and gunicorn sees the real client only through its proxy.

Every client speaks from its own address of 127.0.0.0/8, since the limits
are per client address."""

import re
import shutil
import subprocess
import threading
import time

import pytest
import requests

import settings
from deploy import nginx
from harness import Stack, wait_for
from tests.api_helpers import assert_clean_4xx
from tests.e2e_helpers import unique
from tests.edge_helpers import Edge, client, connect_from
from tests.test_api_metrics import samples

ADD = "/api/v1/add-followers"
USERS = "/api/v1/users"


# --- The template ------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("envsubst"), reason="envsubst (gettext-base) is not installed")
def test_rendering_substitutes_listen_and_upstream_only_as_envsubst_does():
    env = {"LISTEN": "127.0.0.1:8000", "API_UPSTREAM": "api:8000", "remote_addr": "SUBSTITUTED",
           "PATH": "/usr/bin:/bin"}
    expected = subprocess.run(["envsubst", "${LISTEN} ${API_UPSTREAM}"], input=nginx.TEMPLATE.read_text(),
                              env=env, capture_output=True, text=True, check=True).stdout
    rendered = nginx.render("127.0.0.1:8000", "api:8000")
    assert rendered == expected
    assert "listen 127.0.0.1:8000;" in rendered and "server api:8000;" in rendered
    assert "$binary_remote_addr" in rendered and "$remote_addr" in rendered and "SUBSTITUTED" not in rendered
    assert "${" not in rendered


def test_the_body_limit_and_its_message_match_max_body_bytes():
    text = nginx.TEMPLATE.read_text()
    size = re.search(r"client_max_body_size (\d+)k;", text)
    assert size and int(size.group(1)) * 1024 == settings.MAX_BODY_BYTES, "keep nginx's limit = MAX_BODY_BYTES"
    assert re.search(r"client_body_buffer_size (\d+)k;", text).group(1) == size.group(1)
    assert f"request bodies are limited to {settings.MAX_BODY_BYTES} bytes" in text


# --- Live: nginx in front of gunicorn -----------------------------------------


@pytest.fixture(scope="module")
def stack():
    # The access log shows which client gunicorn believes it talks to.
    env = {"PASSWORD_HASH_COST": "1024", "GUNICORN_CMD_ARGS": "--access-logfile -"}
    with Stack("edge", env=env) as stack:
        stack.reset()
        stack.start_api()
        yield stack


@pytest.fixture(scope="module")
def edge(stack):
    with Edge(stack).start() as edge:
        yield edge


@pytest.fixture(scope="module")
def user_id(edge):
    response = client("127.0.0.2").post(f"{edge.url}{USERS}", json={"login": unique("edge"), "password": "pw",
                                                                       "age": 1})
    assert response.status_code == 201, response.text
    return response.json()["id"]


class Tricklers:
    """Connections that send a request a byte at a time, one byte each
    ``interval`` seconds: headers that never end, or a body of 100 bytes that
    takes 100 intervals. Each comes from its own address."""

    def __init__(self, port, addresses, *, body, interval=1.0):
        self.sockets = []
        for address in addresses:
            sock = connect_from(address, port)
            if body:
                sock.sendall(b"POST /api/v1/users HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n{")
            else:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
            self.sockets.append(sock)
        self.interval = interval
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self):
        while not self._stop.wait(self.interval):
            for sock in list(self.sockets):
                try:
                    sock.sendall(b"a")
                except OSError:  # nginx closed it
                    self.sockets.remove(sock)
                    self.closed_by_server += 1

    def stop(self):
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


def health_latencies(url, address, count):
    session = client(address)
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        response = session.get(f"{url}/health", timeout=10)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return sorted(latencies)


def p99(latencies):
    return latencies[max(0, round(len(latencies) * 0.99) - 1)]


@pytest.mark.slow  # a real nginx in front of a real gunicorn
def test_slow_clients_do_not_stall_the_api(stack, edge, user_id):
    baseline = health_latencies(edge.url, "127.0.0.3", 50)
    # Through nginx: 100 clients trickling headers and 100 trickling bodies,
    # each from its own address.
    headers = Tricklers(edge.port, [f"127.0.1.{i}" for i in range(1, 101)], body=False)
    bodies = Tricklers(edge.port, [f"127.0.1.{i}" for i in range(101, 201)], body=True)
    started = time.monotonic()
    try:
        neighbour = client("127.0.0.4")
        answers = []
        for index in range(10):
            answers.append(neighbour.post(f"{edge.url}{USERS}", json={"login": unique("n"), "password": "pw",
                                                                       "age": index}, timeout=10).status_code)
            answers.append(neighbour.get(f"{edge.url}{USERS}/{user_id}", timeout=10).status_code)
        latencies = health_latencies(edge.url, "127.0.0.3", 200)
        print(f"\n/health through nginx: p99 {p99(baseline) * 1000:.1f} ms alone, {p99(latencies) * 1000:.1f} ms "
              f"with 200 slow clients (median {latencies[len(latencies) // 2] * 1000:.1f} ms)")
        assert answers == [201, 200] * 10
        assert p99(latencies) < 0.100, f"p99 {p99(latencies) * 1000:.0f} ms with 200 slow clients"
        assert (len(headers.sockets), len(bodies.sockets)) == (100, 100), "nginx dropped slow clients early"

        # Meanwhile, the same done to gunicorn itself: as many connections
        # as it serves at once (1 worker x API_WORKER_CONNECTIONS greenlets),
        # trickling their bodies, hold every one, and /health waits in the
        # listen backlog. This is what nginx is for.
        slots = settings.API_WORKERS * settings.API_WORKER_CONNECTIONS
        direct = Tricklers(stack.port, [f"127.0.2.{i}" for i in range(1, slots + 1)], body=True)
        try:
            time.sleep(1)
            with pytest.raises(requests.Timeout):
                client("127.0.0.3").get(f"{stack.url}/health", timeout=3)
        finally:
            direct.stop()

        # client_header_timeout: a header that never ends is cut after 10 s;
        # a body still moving is not (its timeout is between two reads).
        wait_for(lambda: headers.closed_by_server == 100, timeout=15 - (time.monotonic() - started),
                 what="nginx to close the 100 connections whose headers never end")
        assert bodies.closed_by_server == 0
    finally:
        headers.stop()
        bodies.stop()
    wait_for(lambda: answers_health(stack.url), timeout=20, what="gunicorn to recover")


def answers_health(url):
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.slow  # a real nginx in front of a real gunicorn
def test_a_flood_from_one_address_gets_429s_and_a_neighbour_is_served(edge, user_id):
    body = {"userId": user_id, "followersLogin": unique("f"), "count": 0}
    flood = []  # (status, response) of the flooder's requests

    def flooder():
        session = client("127.0.0.5")
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            response = session.post(f"{edge.url}{ADD}", json=body)
            flood.append((response.status_code, response))

    threads = [threading.Thread(target=flooder) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    neighbour = client("127.0.0.6")
    served = []
    for _ in range(8):
        served.append(neighbour.post(f"{edge.url}{ADD}", json=body).status_code)
        time.sleep(0.25)
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    statuses = [status for status, _ in flood]
    assert set(statuses) == {200, 429}, set(statuses)
    # limit_req: 5 a second, with a burst of 10.
    assert statuses.count(200) <= 10 + 5 * elapsed + 1, (statuses.count(200), elapsed)
    assert statuses.count(429) > statuses.count(200)
    refused = next(response for status, response in flood if status == 429)
    assert_clean_4xx(refused, 429, ADD)
    assert refused.json()["error"] == "too many requests" and int(refused.headers["Retry-After"]) >= 1
    assert served == [200] * 8
    assert "limiting requests" in edge.error_log.read_text()


@pytest.mark.slow  # a real nginx in front of a real gunicorn
def test_one_address_holds_at_most_8_requests_in_flight(edge, user_id):
    # Bodies that never finish: each request stays in flight in nginx.
    held = Tricklers(edge.port, ["127.0.0.11"] * 8, body=True)
    try:
        time.sleep(0.5)
        assert held.closed_by_server == 0
        ninth = client("127.0.0.11").get(f"{edge.url}{USERS}/{user_id}")
        assert (ninth.status_code, ninth.headers["Content-Type"], ninth.headers["Retry-After"]) == \
               (429, "application/json", "1")
        assert ninth.json()["success"] is False and ninth.json()["error"] == "too many requests"
        assert client("127.0.0.12").get(f"{edge.url}{USERS}/{user_id}").status_code == 200
    finally:
        held.stop()
    assert "limiting connections" in edge.error_log.read_text()


@pytest.mark.slow  # a real nginx in front of a real gunicorn
def test_a_10_mb_body_gets_413_from_nginx_and_never_reaches_gunicorn(stack, edge):
    sender = client("127.0.0.7")
    big = b'{"login": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    with_length = sender.post(f"{edge.url}{USERS}", data=big, headers={"Content-Type": "application/json"})
    chunked = sender.post(f"{edge.url}{USERS}", data=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                          headers={"Content-Type": "application/json"})
    for response in (with_length, chunked):
        body = assert_clean_4xx(response, 413, USERS)
        assert body == {"success": False, "error": "body too large",
                        "description": f"request bodies are limited to {settings.MAX_BODY_BYTES} bytes"}
        assert response.headers["Server"] == "nginx"
    counts = samples(stack.get("/metrics").text, "followers_http_requests_total")
    assert not [key for key in counts if 'status="413"' in key], counts
    assert ' 413 ' in edge.access_log.read_text()


@pytest.mark.slow  # a real nginx in front of a real gunicorn
def test_gunicorn_believes_x_forwarded_for_from_its_proxy_only(stack, edge):
    def logged_client(url, address, tag, forged):
        client(address).get(f"{url}/health?probe={tag}", headers={"X-Forwarded-For": forged})

        def logged():  # gunicorn writes its access line after the answer: wait for it
            return [line for line in stack.api.log_path.read_text().splitlines() if f"probe={tag} " in line]

        lines = wait_for(logged, timeout=5, what=f"the access log line of probe {tag}")
        assert len(lines) == 1, lines
        return lines[0].split()[0]

    # Through nginx, which replaces whatever the client claims.
    assert logged_client(edge.url, "127.0.0.8", unique("p"), "6.6.6.6") == "127.0.0.8"
    # Straight to gunicorn from a peer not in FORWARDED_ALLOW_IPS: not believed.
    assert logged_client(stack.url, "127.0.0.9", unique("p"), "6.6.6.6") == "127.0.0.9"
    # From the proxy's own address (127.0.0.1), it is.
    assert logged_client(stack.url, "127.0.0.1", unique("p"), "7.7.7.7") == "7.7.7.7"


@pytest.mark.slow  # a real nginx in front of a real gunicorn
def test_with_gunicorn_down_nginx_answers_503_in_json(stack, edge):
    stack.api.stop()
    try:
        response = client("127.0.0.10").get(f"{edge.url}/health")
        assert response.status_code == 503
        assert response.headers["Content-Type"] == "application/json" and response.headers["Retry-After"] == "5"
        assert response.json()["success"] is False and response.json()["error"] == "api unavailable"
    finally:
        stack.start_api()
