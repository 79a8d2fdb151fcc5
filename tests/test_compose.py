"""docker-compose.yml, the Dockerfile and .env.example, checked without
Docker: the services and their commands, health checks and start order, and
that every variable the application gets is a setting of settings.py."""

import re

import pytest
import yaml

from tests.api_helpers import ROOT

APP_SERVICES = {"schema", "api", "worker"}


def settings_names():
    return set(re.findall(r'_(?:int|str|bool|choice)\(\s*"([A-Z0-9_]+)"', (ROOT / "settings.py").read_text()))


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_services_and_their_commands(compose):
    services = compose["services"]
    assert set(services) == {"rabbitmq", "rabbitmq-2", "rabbitmq-3", "postgres", "schema", "api", "worker", "nginx"}
    assert services["schema"]["command"] == ["python", "-m", "db"]
    assert services["api"]["command"] == ["gunicorn", "api:app"]
    assert services["worker"]["command"] == ["dramatiq", "actors", "--processes", "2"]
    assert services["api"]["environment"]["API_BIND"] == "0.0.0.0:8000"
    assert "127.0.0.1:15672:15672" in services["rabbitmq"]["ports"]


def test_nginx_is_the_only_port_published_to_the_network(compose):
    services = compose["services"]
    assert "ports" not in services["api"], "gunicorn must not be reachable but through nginx"
    assert services["nginx"]["ports"] == ["8000:80"]
    for name, service in services.items():
        if name != "nginx":
            for port in service.get("ports", []):
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond the host's loopback"


def test_nginx_renders_the_repos_template_in_front_of_the_api(compose):
    nginx = compose["services"]["nginx"]
    assert nginx["image"].startswith("nginx:")
    assert "./deploy/nginx.conf.template:/etc/nginx/templates/default.conf.template:ro" in nginx["volumes"]
    env = nginx["environment"]
    api_port = compose["services"]["api"]["environment"]["API_BIND"].rsplit(":", 1)[1]
    assert (env["LISTEN"], env["API_UPSTREAM"]) == ("80", f"api:{api_port}")
    # Compose turns $$ into $: the image's envsubst gets ^(LISTEN|API_UPSTREAM)$.
    assert env["NGINX_ENVSUBST_FILTER"] == "^(LISTEN|API_UPSTREAM)$$"
    assert nginx["stop_signal"] == "SIGQUIT" and nginx["restart"] == "unless-stopped"
    assert nginx["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert compose["services"]["api"]["environment"]["FORWARDED_ALLOW_IPS"] == "*"


def test_rabbitmq_is_current_with_its_ui_and_no_guest(compose):
    rabbitmq = compose["services"]["rabbitmq"]
    image, _, tag = rabbitmq["image"].partition(":")
    major, minor = (int(part) for part in re.match(r"(\d+)\.(\d+)", tag).groups())
    assert image == "rabbitmq" and tag.endswith("management") and (major, minor) >= (3, 13)
    env = rabbitmq["environment"]
    assert env["RABBITMQ_DEFAULT_USER"].startswith("${") and env["RABBITMQ_DEFAULT_PASS"].startswith("${")
    assert "guest" not in yaml.safe_dump(compose)


def test_health_checks_restarts_and_start_order(compose):
    services = compose["services"]
    for name in ("rabbitmq", "rabbitmq-2", "rabbitmq-3", "postgres", "api", "worker", "nginx"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("api", "worker"):
        assert services[name]["restart"] == "unless-stopped"
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "rabbitmq": {"condition": "service_healthy"},
            "schema": {"condition": "service_completed_successfully"},
        }
    assert services["schema"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["schema"]["restart"] == "no"


def test_every_variable_the_application_gets_is_a_setting(compose):
    names = settings_names()
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        assert set(env) <= names, (name, set(env) - names)
        assert {"DATABASE_URL", "RABBITMQ_URL"} <= set(env)


def test_env_example_documents_every_variable_compose_reads():
    text = (ROOT / "docker-compose.yml").read_text()
    read = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z0-9_]+)=", example, re.M))
    assert read <= documented, read - documented
    assert settings_names() <= documented, f"add {settings_names() - documented} to .env.example"
    assert documented <= settings_names() | read, documented - settings_names() - read
    for line in example.splitlines():  # nothing that looks like a real secret
        if re.match(r"[A-Z_]*(PASSWORD|TOKEN)=", line):
            assert line.split("=", 1)[1] in ("", ) or "change-me" in line, line


def test_the_dockerfile_builds_the_project_on_python_311():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert "pip install -r requirements.txt" in dockerfile and "COPY . ." in dockerfile


def test_the_cluster_profile_adds_two_nodes_that_join_the_first_and_the_services_list_all_three(compose):
    services = compose["services"]
    nodes = ["rabbitmq", "rabbitmq-2", "rabbitmq-3"]
    assert "profiles" not in services["rabbitmq"]  # a single node without the profile, as before
    for name in nodes[1:]:
        node = services[name]
        assert node["profiles"] == ["cluster"] and node["image"] == services["rabbitmq"]["image"]
        assert node["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
        assert node["restart"] == "unless-stopped"
        assert [config["target"] for config in node["configs"]] == ["/etc/rabbitmq/conf.d/20-cluster.conf"]
    # Each node its own name (RabbitMQ's node name is rabbit@<hostname>), data and host port.
    assert [services[name]["hostname"] for name in nodes] == nodes
    assert len({services[name]["volumes"][0] for name in nodes}) == 3
    assert len({services[name]["ports"][0].rsplit(":", 1)[0] for name in nodes}) == 3  # a host port each
    # One cookie for the three, from .env.
    cookies = {services[name]["environment"]["RABBITMQ_ERLANG_COOKIE"] for name in nodes}
    assert len(cookies) == 1 and cookies.pop().startswith("${RABBITMQ_ERLANG_COOKIE")
    # Classic config peer discovery, naming the three nodes.
    config = compose["configs"][services["rabbitmq-2"]["configs"][0]["source"]]["content"]
    assert "cluster_formation.peer_discovery_backend = classic_config" in config
    assert sorted(re.findall(r"classic_config\.nodes\.\d+ = rabbit@([\w-]+)", config)) == nodes
    # The API, the workers and the schema list the three nodes.
    for name in APP_SERVICES:
        urls = services[name]["environment"]["RABBITMQ_URL"].split(";")
        assert [re.search(r"@([\w-]+):5672/", url).group(1) for url in urls] == nodes, name
        assert services[name]["environment"]["QUEUE_TYPE"] == "${QUEUE_TYPE:-quorum}"
