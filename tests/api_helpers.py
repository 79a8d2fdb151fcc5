"""Shared pieces of the API tests: openapi.json, and checking a live answer
against it (status listed, media type, body schema, required headers)."""

import json
import re
import socket
from pathlib import Path

import jsonschema_rs

ROOT = Path(__file__).resolve().parent.parent
OPENAPI = json.loads((ROOT / "openapi.json").read_text())
TOKEN = "test-token-Zx8"


#: The console's HTML pages: left out of openapi.json and the Postman collection,
#: which describe the JSON API (tests/test_openapi.py checks they are all HTML).
CONSOLE_PREFIX = "/console"


def is_console(path):
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def openapi_path(falcon_template):
    """/api/v1/users/{user_id:int(min=1)} -> /api/v1/users/{user_id}"""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", falcon_template)


def _deref(node):
    while isinstance(node, dict) and "$ref" in node:
        target = OPENAPI
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def response_spec(path, method, status):
    """What openapi.json says of ``status`` for ``method path``; ``path``
    None (no route) or a method the path does not list fall back to the
    document's NotFound and MethodNotAllowed answers."""
    operation = OPENAPI["paths"].get(path, {}).get(method.lower()) if path else None
    if operation is None:
        name = {404: "NotFound", 405: "MethodNotAllowed", 413: "ContentTooLarge"}.get(status)
        assert name, f"{method} {path} answered {status}"
        return _deref({"$ref": f"#/components/responses/{name}"})
    spec = operation["responses"].get(str(status))
    assert spec is not None, f"{method} {path} answered {status}, which openapi.json does not list"
    return _deref(spec)


def assert_conforms(response, path):
    """``response`` (requests) to a request for the OpenAPI ``path`` matches the document."""
    spec = response_spec(path, response.request.method, response.status_code)
    for name, header in spec.get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers, f"{response.status_code} lacks its {name} header"
    media, content = next(iter(spec["content"].items()))
    assert response.headers.get("Content-Type", "").startswith(media), response.headers.get("Content-Type")
    if media == "application/json":
        schema = {**_deref(content["schema"]), "components": OPENAPI["components"]}
        validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
        errors = [error.message for error in validator.iter_errors(response.json())]
        assert not errors, f"{response.request.method} {path} {response.status_code}: {errors}\n{response.text}"


def assert_clean_4xx(response, status=None, path=None):
    """A refusal as a client should get it: the status, a JSON error body,
    no trace of the server's insides."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert_conforms(response, path)
    return body


def raw_http(port, head, body=b"", *, timeout=10):
    """Send bytes as they are (what requests would not send) and return the
    status line, the headers and the body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.replace(b"\n", b"\r\n") + b"\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, payload
