"""The OpenAPI description (/openapi.json) cannot drift from the routes: it is made from the
declarations beside the endpoints, and fails to be made when a route has none or a
declaration fits no route. Also the fixes Schemathesis's runs led to (tests/test_api_fuzz.py),
each through the real app."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from test_gateway_app import Stack, start_stack

import gateway.http
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.errors import RequestError
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
from gateway.http.previews import _point

TOKEN = "admin-token-openapi-0123456789"
README = Path(__file__).parent.parent / "README.md"


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


ADMIN = {"Authorization": f"Bearer {TOKEN}"}


class TestServed:
    def test_the_gateway_serves_its_description(self, stack):
        answer = httpx.get(f"{stack.gateway}/openapi.json", timeout=30)
        assert answer.status_code == 200
        served = answer.json()
        validate(served)
        assert served["openapi"] == "3.1.0"
        assert served["servers"] == [{"url": stack.config.public_url}]

    def test_the_readmes_generated_client_buys_an_image(self, stack, tmp_path):
        """The README's two blocks, as written there: a client generated from the served
        description with openapi-python-client, then a checkout and its job's status."""
        blocks = re.findall(r"```(\w+)\n(.*?)```", README.read_text(), re.S)
        shell = next(code for kind, code in blocks if kind == "sh" and "openapi-python-" in code)
        client = next(code for kind, code in blocks if kind == "python" and "smi_client" in code)
        ours = {
            "https://gateway.example": stack.gateway,
            "https://shop.example/photos/lake.jpg": f"{stack.images}/photo.jpg",
            "https://shop.example/gallery": "http://shop.test/gallery",
        }
        for theirs, here in ours.items():
            shell, client = shell.replace(theirs, here), client.replace(theirs, here)
        command = next(line for line in shell.splitlines() if " generate " in line)
        tools = str(Path(sys.executable).parent)  # the generator, and ruff for its formatting
        env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
        made = subprocess.run(
            shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert made.returncode == 0, made.stdout + made.stderr
        bought = subprocess.run(
            [sys.executable, "-c", client], cwd=tmp_path, capture_output=True, text=True
        )
        assert bought.returncode == 0, bought.stderr
        status, checkout_url = bought.stdout.split()
        assert status == "awaiting_payment"
        assert checkout_url.startswith(stack.emulator)

    def test_a_method_not_allowed_names_every_method_of_its_path(self, stack):
        """Found by Schemathesis (allow_header_conformance): a path with a route per method
        said only its first route's methods (POST /admin/users was missing from Allow)."""
        for path, allowed in (
            ("/admin/users", "GET, HEAD, POST"),
            ("/dashboard/sign-in", "GET, HEAD, POST"),
            ("/static/smi-checkout.js", "GET, HEAD"),
        ):
            answer = httpx.request("PUT", f"{stack.gateway}{path}", headers=ADMIN, timeout=30)
            assert answer.status_code == 405, path
            assert answer.headers["allow"] == allowed, path
            assert answer.json()["error"]["type"] == "method_not_allowed"

    def test_times_carry_their_offset_on_sqlite_too(self, stack):
        """Found by Schemathesis (response_schema_conformance, format date-time): on SQLite
        the admin API's and the job's times came without their zone."""
        made = httpx.post(
            f"{stack.gateway}/admin/users",
            json={"email": "times@shop.test", "role": "support"},
            headers=ADMIN,
            timeout=30,
        )
        assert made.json()["user"]["created_at"].endswith("+00:00")
        listed = httpx.get(f"{stack.gateway}/admin/users", headers=ADMIN, timeout=30).json()
        assert all(user["created_at"].endswith("+00:00") for user in listed["users"])
        job_id = stack.checkout().json()["job_id"]
        job = stack.status(job_id)
        assert job["created_at"].endswith("+00:00") and job["updated_at"].endswith("+00:00")
        admin_job = httpx.get(f"{stack.gateway}/admin/jobs/{job_id}", headers=ADMIN, timeout=30)
        assert admin_job.json()["job"]["created_at"].endswith("+00:00")
        assert all(entry["at"].endswith("+00:00") for entry in admin_job.json()["audit"])

    @pytest.mark.parametrize(
        ("query", "status"),
        [
            ("/admin/jobs?status=paid", 400),
            ("/admin/jobs?status=completed", 200),
            ("/admin/jobs?status=", 200),  # smi-admin sends empty filters
            ("/admin/events?outcome=applied", 200),
            ("/admin/events?outcome=done", 400),
            ("/admin/events?outcome=", 200),
            ("/admin/reports/revenue?format=xml", 400),
            ("/admin/reports/revenue?format=csv&since=&until=", 200),
        ],
    )
    def test_admin_filters_refuse_what_is_not_one(self, stack, query, status):
        """Found by Schemathesis (negative_data_rejection): a status, outcome or format that
        is not one was taken as a filter that matches nothing (or as JSON)."""
        answer = httpx.get(f"{stack.gateway}{query}", headers=ADMIN, timeout=30)
        assert answer.status_code == status, answer.text
        if status == 400:
            assert answer.json()["error"]["type"] == "invalid_request"


def test_a_preview_square_at_whole_numbers_written_as_json_numbers_with_a_point():
    """Found by Schemathesis (positive_data_acceptance): JSON Schema's integer 12.0 was
    refused as a pixel; x and y still come together, whole, within the limit."""
    assert _point({"x": 12.0, "y": 3}) == (12, 3)
    assert _point({"image_url": "…"}) is None
    for body in (
        {"x": 12.5, "y": 3},
        {"x": 1, "y": None},
        {"x": None, "y": None},
        {"x": True, "y": 1},
        {"x": 2**20, "y": 0},
        {"y": 0},
    ):
        with pytest.raises(RequestError, match="whole numbers"):
            _point(body)
