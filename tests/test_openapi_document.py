"""The OpenAPI document is true to the app: every route of the aiohttp application is in
it, and nothing in it is missing from the app. Pure: the app is built, never served."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from openapi_spec_validator import validate

from api import openapi
from api.app import build_app
from api.errors import PHRASES
from shared.resources import Resources
from shared.settings import Settings

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Operational endpoints that are not part of the public REST API (the ops listener's job).
NOT_PUBLIC = {"/readyz", "/metrics"}


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env({})


@pytest.fixture(scope="module")
def document(settings: Settings) -> dict[str, Any]:
    return openapi.document(settings)


def app_routes(settings: Settings) -> set[tuple[str, str]]:
    app = build_app(cast(Resources, SimpleNamespace(settings=settings)))
    found = set()
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        found.add((route.method.lower(), resource.canonical))
    return found


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_of_the_app_is_documented(settings: Settings, document: dict[str, Any]) -> None:
    missing = {
        (m, p) for m, p in app_routes(settings) - documented(document) if p not in NOT_PUBLIC
    }
    assert missing == set()


def test_everything_documented_is_a_route_of_the_app(
    settings: Settings, document: dict[str, Any]
) -> None:
    assert documented(document) - app_routes(settings) == set()


def test_the_check_sees_an_undocumented_route(settings: Settings) -> None:
    fewer = openapi.document(settings)
    del fewer["paths"]["/v1/files/{file_id}"]["delete"]
    assert app_routes(settings) - documented(fewer) >= {("delete", "/v1/files/{file_id}")}


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_the_public_api_is_the_v1_files_api_and_healthz(document: dict[str, Any]) -> None:
    assert all(
        p.startswith("/v1/") for p in document["paths"] if p not in ("/healthz", "/openapi.json")
    )


def test_every_v1_operation_needs_the_bearer_key_and_documents_401(
    document: dict[str, Any],
) -> None:
    assert document["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer <key>`.",
    }
    for path, item in document["paths"].items():
        for method in set(item) & set(METHODS):
            op = item[method]
            if path.startswith("/v1/"):
                assert "security" not in op, (method, path)
                assert "401" in op["responses"], (method, path)
            else:
                assert op["security"] == [], (method, path)


def test_every_error_response_is_the_contracts_json_shape(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["code", "error"]
    assert set(error["properties"]["code"]["enum"]) == set(PHRASES.values())
    for name, response in document["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }, name
    for path, item in document["paths"].items():
        for method in set(item) & {"get", "post", "delete"}:
            for status, response in item[method]["responses"].items():
                if int(status) >= 400:
                    assert response["$ref"].startswith("#/components/responses/"), (path, status)


def test_the_numbers_are_the_servers_own() -> None:
    doc = openapi.document(Settings.from_env({"EXPIRES_AFTER_MIN": "60"}))
    expires = doc["components"]["schemas"]["ExpiresAfter"]
    assert (expires["minimum"], expires["maximum"]) == (60, 2_592_000)


def test_uploads_link_their_file_id_to_the_operations_on_it(document: dict[str, Any]) -> None:
    links = document["paths"]["/v1/files"]["post"]["responses"]["200"]["links"]
    assert {link["operationId"] for link in links.values()} == {
        "getFile",
        "getFileContent",
        "deleteFile",
        "createPublicUrl",
        "revokePublicUrl",
    }
    assert all(link["parameters"] == {"file_id": "$response.body#/id"} for link in links.values())
