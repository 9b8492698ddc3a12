"""The OpenAPI description (/openapi.json) cannot drift from the routes: it is made from the
declarations beside the endpoints, and fails to be made when a route has none or a
declaration fits no route."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from test_gateway_app import Stack, start_stack

import gateway.http
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.http.openapi import (
    Answer,
    DescriptionError,
    Link,
    Operation,
    declaration_of,
    described,
    document,
    doors,
)

TOKEN = "admin-token-openapi-0123456789"


def config(**settings: str) -> GatewayConfig:
    return GatewayConfig.from_env(
        {
            "SMI_STRIPE_TEST_SECRET_KEY": "sk_test_openapi",
            "SMI_STRIPE_TEST_WEBHOOK_SECRET": "whsec_openapi",
            "SMI_DATABASE_URL": "sqlite:///unused.sqlite3",
            "SMI_PUBLIC_URL": "https://gateway.example",
            **settings,
        }
    )


@pytest.fixture(scope="module")
def app():
    return create_app(config(SMI_OFFER_MODELS="RealESRGAN_x4plus,RealESRGAN_x2plus"))


@pytest.fixture(scope="module")
def described_app(app) -> dict:
    return document(app.routes, config(SMI_OFFER_MODELS="RealESRGAN_x4plus,RealESRGAN_x2plus"))


class TestNoDrift:
    def test_every_route_and_method_has_a_description(self, app, described_app):
        validate(described_app)  # OpenAPI 3.1, and every $ref resolves
        described_doors = {
            (path, method.upper())
            for path, methods in described_app["paths"].items()
            for method in methods
        }
        routed = set()
        for route in app.routes:
            if isinstance(route, Route):
                path = route.path_format
                routed |= {(path, m) for m in (route.methods or set()) - {"HEAD"}}
            else:
                assert isinstance(route, Mount)
                routed.add((f"{route.path}/{{path}}", "GET"))
        assert routed <= described_doors
        assert ("/api/jobs/{job_id}", "GET") in described_doors
        assert ("/downloads/{token}", "HEAD") in described_doors  # declared with head=True

    def test_every_description_has_a_route(self, app):
        """A declared endpoint in gateway/http/ that no route serves is drift too."""
        routed = {id(door.operation) for door in doors(app.routes)}
        declared = {}
        for module_info in pkgutil.iter_modules(gateway.http.__path__):
            module = importlib.import_module(f"gateway.http.{module_info.name}")
            for name, value in vars(module).items():
                operation = declaration_of(value) if callable(value) else None
                if operation is not None:
                    declared[f"{module_info.name}.{name}"] = operation
        assert len(declared) > 50
        unrouted = [name for name, operation in declared.items() if id(operation) not in routed]
        assert not unrouted, f"described but served by no route: {unrouted}"

    def test_a_route_without_a_description_is_refused(self):
        async def undescribed(request) -> Response:
            return JSONResponse({})

        with pytest.raises(DescriptionError, match="GET /new has no description"):
            document([Route("/new", undescribed)])

    def test_a_description_naming_other_path_parameters_is_refused(self):
        @described(
            Operation(
                "getThing",
                "a thing",
                tags=("customer",),
                path={"thing": "its id"},
                answers={200: Answer("it")},
            )
        )
        async def thing(request) -> Response:
            return JSONResponse({})

        with pytest.raises(DescriptionError, match=r"path parameters are \['thing_id'\]"):
            document([Route("/things/{thing_id}", thing)])

    def test_two_operations_of_one_id_or_a_link_to_none_are_refused(self):
        answer = {200: Answer("it")}

        @described(Operation("same", "one", tags=("customer",), answers=answer))
        async def one(request) -> Response:
            return JSONResponse({})

        @described(Operation("same", "two", tags=("customer",), answers=answer))
        async def two(request) -> Response:
            return JSONResponse({})

        with pytest.raises(DescriptionError, match="are both same"):
            document([Route("/one", one), Route("/two", two)])

        @described(
            Operation(
                "linking",
                "a link to nothing",
                tags=("customer",),
                answers={200: Answer("it", {"type": "object"}, links={"Gone": Link("gone", {})})},
            )
        )
        async def linking(request) -> Response:
            return JSONResponse({})

        with pytest.raises(DescriptionError, match="a link names gone"):
            document([Route("/linking", linking)])


class TestWhatItSays:
    def test_errors_have_their_one_shape_and_their_headers(self, described_app):
        error = {"$ref": "#/components/schemas/Error"}
        for path, methods in described_app["paths"].items():
            for method, operation in methods.items():
                where = f"{method.upper()} {path}"
                answers = operation["responses"]
                assert "400" in answers, where  # a NUL in the path or query, at every door
                for status, answer in answers.items():
                    content = answer.get("content", {})
                    if (path, status) == ("/readyz", "503"):
                        continue  # not ready: the same body as ready, saying what is down
                    if int(status) >= 400 and "application/json" in content:
                        assert content["application/json"].get("schema", error) == error, where
                    if status in ("429", "503"):
                        assert answer["headers"]["Retry-After"]["required"], where

    def test_auth_schemes_and_who_needs_which(self, described_app):
        schemes = described_app["components"]["securitySchemes"]
        assert schemes["adminToken"] == {**schemes["adminToken"], "scheme": "bearer"}
        assert schemes["metricsToken"]["scheme"] == "bearer"
        assert (schemes["buyerKey"]["in"], schemes["buyerKey"]["name"]) == ("header", "X-Buyer-Key")
        assert schemes["dashboardSession"]["in"] == "cookie"
        paths = described_app["paths"]
        for path, methods in paths.items():
            for operation in methods.values():
                if path.startswith("/admin/"):
                    assert operation["security"] == [{"adminToken": []}], path
                    assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
        assert paths["/metrics"]["get"]["security"] == [{"metricsToken": []}]
        assert paths["/api/jobs/{job_id}"]["get"]["security"] == [{}, {"buyerKey": []}]
        assert "security" not in paths["/api/checkout"]["post"]

    def test_the_checkout_links_to_its_job_with_its_buyer_key(self, described_app):
        created = described_app["paths"]["/api/checkout"]["post"]["responses"]["201"]
        assert created["links"]["GetJob"] == {
            "operationId": "getJob",
            "parameters": {
                "job_id": "$response.body#/job_id",
                "header.X-Buyer-Key": "$response.body#/buyer_key",
            },
            "description": "the job's status, as its buyer",
        }

    def test_the_models_offered_are_this_gateways(self, described_app):
        offered = described_app["components"]["schemas"]["OfferedModel"]["enum"]
        assert offered == ["RealESRGAN_x4plus", "RealESRGAN_x2plus"]
        assert described_app["servers"] == [{"url": "https://gateway.example"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("openapi")
    with start_stack(f"sqlite:///{tmp / 'gateway.sqlite3'}", tmp, SMI_ADMIN_TOKEN=TOKEN) as s:
        yield s


class TestServed:
    def test_the_gateway_serves_its_description(self, stack):
        answer = httpx.get(f"{stack.gateway}/openapi.json", timeout=30)
        assert answer.status_code == 200
        served = answer.json()
        validate(served)
        assert served["openapi"] == "3.1.0"
        assert served["servers"] == [{"url": stack.config.public_url}]
