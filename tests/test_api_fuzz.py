"""Schemathesis against the running gateway, with the description it serves (/openapi.json).

One gateway (the real app on uvicorn, SQLite, the Stripe emulator, an image
server) answers every generated request, as Schemathesis's command line would
send them (its engine, in this process): the description's examples, its
coverage cases (each boundary and each way to be wrong) and fuzzed cases for
every operation, the customer API, previews, downloads, the webhook, the
admin API, health and metrics, and the dashboard with a signed-in owner's
session; then walks along the description's links (a checkout, then its job's
status and the buyer's return, with the buyer key the checkout gave; a
preview, then its status and images; an account, then its reset and removal).

Every check Schemathesis has must pass: no server error, no status the
description does not list, no body, header or media type other than it says
(answers are held to their schemas with every object closed: a field the
gateway answers but the description does not name fails), no request the
schema calls invalid accepted, no valid one refused (but where validity is
not the schema's to say, listed in ``NOT_UP_TO_THE_SCHEMA``), no ignored
authentication, an ``Allow`` header that names every method of a path.
Example counts are small (two cores); CI derandomizes (tests/conftest.py) and
Schemathesis runs deterministic here, so a red build is reproducible.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.engine import Status, events, from_schema
from test_gateway_app import Stack, start_stack

from gateway.store.accounts import csrf_token

TOKEN = "admin-token-fuzz-0123456789"
METRICS_TOKEN = "metrics-token-fuzz-0123456789"
OWNER, OWNER_PASSWORD = "fuzz-owner@shop.test", "a-password-of-its-own"
EXAMPLES = 15

# What "valid" cannot promise here: a checkout's or preview's image must be on the shop's
# hosts and answer (a generated address is neither: 422), its return address on the
# shop's site (400); only Stripe can sign an event (400); an erasure's confirmation must
# repeat its address, a new password needs the current one (400, the page says why).
NOT_UP_TO_THE_SCHEMA = {
    "createCheckout": [400, 422],
    "createPreview": [422],
    "stripeWebhook": [400],
    "dashboardErase": [400],
    "changePassword": [400],
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]
# Where links lead (the customer's way through a purchase and a preview; an account's life).
LINKED = [
    "createCheckout",
    "getJob",
    "returnFromCheckout",
    "createPreview",
    "getPreview",
    "getPreviewImage",
    "addUser",
    "resetUser",
    "removeUser",
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("fuzz")
    database = f"sqlite:///{tmp / 'gateway.sqlite3'}"
    with start_stack(
        database,
        tmp,
        SMI_ADMIN_TOKEN=TOKEN,
        SMI_METRICS_TOKEN=METRICS_TOKEN,
        SMI_PREVIEW_PER_CLIENT_PER_MINUTE="100000",
        SMI_PREVIEW_BURST="1000",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def session_token(stack: Stack) -> str:
    """A dashboard owner of the run's own, signed in with a password of its own: its
    session's token (the cookie's value)."""
    admin = {"Authorization": f"Bearer {TOKEN}"}
    made = httpx.post(
        f"{stack.gateway}/admin/users",
        json={"email": OWNER, "role": "owner"},
        headers=admin,
        timeout=30,
    )
    assert made.status_code == 201, made.text
    with httpx.Client(base_url=stack.gateway, timeout=30) as browser:
        signed = browser.post(
            "/dashboard/sign-in", data={"email": OWNER, "password": made.json()["password"]}
        )
        assert signed.status_code == 303, signed.text
        token = browser.cookies["smi_dashboard"]
        changed = browser.post(
            "/dashboard/password",
            data={
                "csrf": csrf_token(token),
                "current": made.json()["password"],
                "new": OWNER_PASSWORD,
                "repeat": OWNER_PASSWORD,
            },
        )
        assert changed.status_code == 303 and "done=password" in changed.headers["location"]
    return str(token)


def tightened(document: dict[str, Any]) -> dict[str, Any]:
    """The description with every answer's objects closed (``additionalProperties: false``):
    a field the gateway answers but the description does not name fails the run. (The served
    description leaves them open, so that a client keeps working when a field is added.)"""
    tight = copy.deepcopy(document)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(tight["components"]["schemas"])
    for methods in tight["paths"].values():
        for operation in methods.values():
            close(operation.get("responses", {}))
    return tight


def load(
    stack: Stack, token: str, phases: dict[str, Any], only: list[str] | None = None
) -> schemathesis.BaseSchema:
    """The gateway's own description as Schemathesis runs it here (``only`` these
    operations, where given): ``phases`` on, the admin and metrics tokens and the owner's
    session given, its form token on every form."""
    document = httpx.get(f"{stack.gateway}/openapi.json", timeout=30).json()
    if only is not None:
        for path, methods in list(document["paths"].items()):
            kept = {m: op for m, op in methods.items() if op["operationId"] in only}
            if kept:
                document["paths"][path] = kept
            else:
                del document["paths"][path]
    config = schemathesis.Config.from_dict(
        {
            "base-url": stack.gateway,
            # Each run stands alone: no requests replayed from an earlier run's cache.
            "cache": {"enabled": False},
            "generation": {
                "max-examples": EXAMPLES,
                "deterministic": True,
                # Text no database stores (NUL, lone surrogates) is refused at every door
                # with 400, as the description says (tests/reliability/test_hostile.py).
                "allow-x00": False,
                "codec": "utf-8",
                # The tokens and the session are given below; the buyer key comes from the
                # checkout's answer (a link), never made up over it.
                "with-security-parameters": False,
            },
            "phases": phases,
            "auth": {
                "openapi": {
                    "adminToken": {"bearer": TOKEN},
                    "metricsToken": {"bearer": METRICS_TOKEN},
                    "dashboardSession": {"api_key": token},
                }
            },
            "operations": [
                # It would end the session every other dashboard request uses.
                {"include-operation-id": "signOut", "enabled": False},
                # A page asked for without the session cookie goes to the sign-in form.
                {
                    "include-tag": "dashboard",
                    "checks": {"negative_data_rejection": {"expected-statuses": [*REFUSED, 303]}},
                },
                *(
                    {
                        "include-operation-id": operation_id,
                        "checks": {
                            "positive_data_acceptance": {
                                "expected-statuses": [*ACCEPTED, *statuses]
                            }
                        },
                    }
                    for operation_id, statuses in NOT_UP_TO_THE_SCHEMA.items()
                ),
            ],
        }
    )
    schema = schemathesis.openapi.from_dict(tightened(document), config=config)

    def valid(body_schema: dict[str, Any], body: Any) -> bool:
        rooted = {**body_schema, "components": document.get("components", {})}
        return jsonschema.Draft202012Validator(rooted).is_valid(body)

    photo = f"{stack.images}/photo.jpg"
    csrf = csrf_token(token)

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy:
        """Some checkouts and previews are of a real image on the shop's host: a job or a
        preview (and their links) comes of them."""
        raw = context.operation.definition.raw
        if (
            raw.get("operationId") in ("createCheckout", "createPreview")
            and isinstance(body, dict)
            # A case of a body its schema refuses stays as it is: made valid, it would be
            # an invalid request "accepted".
            and valid(raw["requestBody"]["content"]["application/json"]["schema"], body)
        ):
            real = {**body, "image_url": photo}
            if isinstance(body.get("return_url"), str):  # a wrong one stays wrong
                real["return_url"] = "http://shop.test/gallery"
            # A walk along the links needs a job or a preview at each checkout or preview.
            return st.just(real) if only is not None else st.sampled_from([body, real])
        return st.just(body)

    @schema.hook
    def map_body(context: Any, body: Any) -> Any:
        """A dashboard form carries the session's form token, as its page's would (unless
        the case is about that very field being wrong)."""
        if isinstance(body, dict) and isinstance(body.get("csrf"), str):
            return {**body, "csrf": csrf}
        return body

    return schema


@dataclass
class Run:
    """What Schemathesis found, and every request it sent with its answer."""

    failures: list[str] = field(default_factory=list)
    answers: list[tuple[str, str, int, bytes]] = field(default_factory=list)  # method, path, ...

    def answered(self, method: str, start: str, status: int) -> list[bytes]:
        return [
            body
            for m, path, code, body in self.answers
            if m == method and path.startswith(start) and code == status
        ]


def run(schema: schemathesis.BaseSchema) -> Run:
    """Schemathesis's engine (as its command line runs) on ``schema``."""
    done = Run()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    path = httpx.URL(interaction.request.uri).path
                    done.answers.append(
                        (
                            interaction.request.method,
                            path,
                            interaction.response.status_code,
                            interaction.response.content,
                        )
                    )
            if event.status != Status.FAILURE:
                continue
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        done.failures.append(
                            f"{event.label} [{event.phase.value}] {check.name}: {failure.title}\n"
                            f"{failure.message}\n{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            done.failures.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            done.failures.append(f"fatal: {event.exception}")
    return done


def off(*phases: str) -> dict[str, Any]:
    return {phase: {"enabled": False} for phase in phases}


def test_every_operation_answers_as_described(stack, session_token):
    schema = load(stack, session_token, off("stateful"))
    done = run(schema)
    assert not done.failures, "\n\n".join(dict.fromkeys(done.failures))
    asked = {(method, path) for method, path, _, _ in done.answers}
    assert len(asked) > 300  # every operation, many ways
    # The signed-in owner's session held: dashboard pages were shown, not only refused.
    assert done.answered("GET", "/dashboard/orders", 200)
    assert done.answered("GET", "/admin/jobs", 200)
    assert done.answered("GET", "/metrics", 200)


def test_links_from_a_checkout_a_preview_and_an_account(stack, session_token):
    schema = load(
        stack,
        session_token,
        {**off("examples", "coverage", "fuzzing"), "stateful": {"max-steps": 8}},
        only=LINKED,
    )
    # Valid requests only: a walk needs checkouts and previews that are made (the wrong ones
    # are the test above's).
    schema.config.generation.update(max_examples=40, modes=["positive"])
    done = run(schema)
    assert not done.failures, "\n\n".join(dict.fromkeys(done.failures))
    # The links were walked: a job's status shown with the buyer key its checkout gave (a
    # job awaiting payment shows its buyer where to pay), the buyer back from Stripe's page.
    shown = [json.loads(body) for body in done.answered("GET", "/api/jobs/", 200)]
    assert any("checkout_url" in job for job in shown), shown
    assert done.answered("POST", "/api/jobs/", 200)  # .../return
    assert done.answered("GET", "/api/previews/", 202)
