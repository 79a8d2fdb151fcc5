"""The Postman collection (v2.1) parses and has a request for every
operation of the app (the console's HTML pages aside), the original's "Add
followers" among them."""

import json
import re

import falcon.inspect

import api
from tests.api_helpers import ROOT, is_console, openapi_path

COLLECTION = ROOT / "postman" / "followers.postman_collection.json"


def requests_of(items):
    for item in items:
        if "item" in item:
            yield from requests_of(item["item"])
        else:
            yield item


def test_the_collection_covers_every_route_of_the_app():
    collection = json.loads(COLLECTION.read_text())
    assert collection["info"]["schema"].endswith("/v2.1.0/collection.json")
    assert {"baseUrl", "token"} <= {variable["key"] for variable in collection["variable"]}
    covered = set()
    for item in requests_of(collection["item"]):
        request = item["request"]
        assert request["url"]["raw"].startswith("{{baseUrl}}/"), item["name"]
        path = request["url"]["raw"].removeprefix("{{baseUrl}}").split("?")[0]
        covered.add((request["method"], re.sub(r"\{\{(\w+)\}\}", "{}", path)))
    routes = {
        (method.method, re.sub(r"\{\w+\}", "{}", openapi_path(route.path)))
        for route in falcon.inspect.inspect_routes(api.create_app(api_token=""))
        for method in route.methods if not method.internal and not is_console(route.path)
    }
    assert covered == routes


def test_add_followers_is_there_as_the_originals_forms_with_the_token():
    items = {item["name"]: item["request"] for item in requests_of(json.loads(COLLECTION.read_text())["item"])}
    for name, mode in (("Add followers", "0"), ("Add followers (async)", "1")):
        request = items[name]
        fields = {field["key"]: field["value"] for field in request["body"]["urlencoded"]}
        assert request["body"]["mode"] == "urlencoded" and fields["async"] == mode
        assert {"userId", "followersLogin", "count"} <= set(fields)
        assert request["auth"]["bearer"][0]["value"] == "{{token}}"
