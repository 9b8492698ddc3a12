"""The gateway's OpenAPI 3.1 description, ``GET /openapi.json``, made from declarations
beside the endpoints: there is no description file to keep in step by hand.

    JOB = schema("Job", {"type": "object", ...})        # a named schema: its $ref

    @described(
        Operation(
            "getJob",
            "A job, as its buyer's page shows it",
            tags=("customer",),
            path={"job_id": "the job's id"},
            answers={200: Answer("the job", JOB)},
            errors=errors(404),
        )
    )
    async def job_status(request: Request) -> Response: ...

Each module of ``gateway.http`` declares its own operations, ``@described``
on the endpoint (or on a mounted app); the named shapes its answers share
are in ``gateway/http/schemas.py``. ``document(routes)`` walks the app's
routes: each path and method gets its endpoint's declaration, path
parameters from the route itself (a declaration naming others is an
error), and the answers every door can give (400 for a path or query
holding text no database stores). Errors answer in their one shape,
``Error`` (``gateway/http/errors.py``), with ``Retry-After`` on 429 and 503
and ``WWW-Authenticate`` on 401.

``tests/test_openapi.py`` fails when a route has no declaration or a
declaration no route; ``tests/test_api_fuzz.py`` runs Schemathesis against
the running app with the description it serves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from gateway.config import GatewayConfig

Schema = dict[str, Any]
T = TypeVar("T")

JSON = "application/json"
HTML = "text/html"
FORM = "application/x-www-form-urlencoded"
ATTRIBUTE = "__openapi__"

# Named schemas (components/schemas), filled as the modules that declare them are imported;
# a schema that depends on the gateway's settings is made from them (``for_config``).
SCHEMAS: dict[str, Schema] = {}
CONFIGURED: dict[str, Callable[[GatewayConfig], Schema]] = {}


def schema(
    name: str, body: Schema, *, for_config: Callable[[GatewayConfig], Schema] | None = None
) -> Schema:
    """Register ``body`` as the component ``name`` (``for_config`` makes it from a gateway's
    settings, where ``document`` is given them); its ``$ref``."""
    if name in SCHEMAS and SCHEMAS[name] != body:
        raise ValueError(f"two schemas are named {name}")
    SCHEMAS[name] = body
    if for_config is not None:
        CONFIGURED[name] = for_config
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(body: Schema) -> Schema:
    """``body`` or ``null`` (a ``$ref`` included)."""
    if "$ref" in body or "type" not in body:
        return {"anyOf": [body, {"type": "null"}]}
    kinds = body["type"] if isinstance(body["type"], list) else [body["type"]]
    return {**body, "type": [*kinds, "null"]}


def obj(required: Sequence[str] = (), /, **properties: Schema) -> Schema:
    """A JSON object of ``properties``; those in ``required`` are always there."""
    unknown = set(required) - set(properties)
    if unknown:
        raise ValueError(f"required but not described: {sorted(unknown)}")
    body: Schema = {"type": "object", "properties": properties}
    if required:
        body["required"] = list(required)
    return body


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time"}
MAYBE_TIME = nullable(TIME)
MAYBE_STRING = nullable(STRING)
MAYBE_INTEGER = nullable(INTEGER)
# A filter's empty value is no filter: a page's form sends every field, smi-admin too.
DAY_OR_EMPTY: Schema = {"type": "string", "anyOf": [{"format": "date"}, {"const": ""}]}
EMAIL: Schema = {"type": "string", "format": "email", "minLength": 3, "maxLength": 320}


def string(description: str, **more: Any) -> Schema:
    return {"type": "string", "description": description, **more}


ERROR = schema(
    "Error",
    {
        "type": "object",
        "description": "Every error the gateway answers, whatever the door.",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "type": string(
                        "what went wrong, for programs: invalid_request, invalid_characters, "
                        "payload_too_large, unsupported_media_type, unusable_image, not_found, "
                        "method_not_allowed, unauthorized, forbidden, not_permitted, "
                        "cross_site_request, conflict, result_unavailable, link_expired, "
                        "rate_limited, invalid_signature, payment_provider_rejected, "
                        "payment_provider_unavailable, event_too_early, storage_full, "
                        "storage_unavailable, broker_unavailable, database_unavailable"
                    ),
                    "message": string("what went wrong, for people"),
                },
                "required": ["type", "message"],
            }
        },
        "required": ["error"],
    },
)

# What each error status means wherever it is not said more precisely.
ERROR_WORDS = {
    400: "invalid_request: the body or a parameter is malformed, or invalid_characters: "
    "the path, query or body holds a NUL or a lone surrogate",
    401: "unauthorized: the bearer token is missing or wrong",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict: the job's state does not allow it",
    410: "link_expired",
    413: "payload_too_large: the body is over its limit",
    415: "unsupported_media_type: send the body as application/json",
    422: "unusable_image: the image's address is not on the shop's hosts, does not answer, "
    "or is not an image we can sell",
    429: "rate_limited: too many requests from this client, or from everyone; "
    "try again after Retry-After",
    502: "payment_provider_rejected: Stripe refused the request",
    503: "unavailable for a moment on our side (Stripe, the database, the broker or storage); "
    "try again after Retry-After",
}


def errors(*statuses: int) -> dict[int, str]:
    """The error answers ``statuses`` in their usual words (see ``ERROR_WORDS``)."""
    return {status: ERROR_WORDS[status] for status in statuses}


@dataclass(frozen=True)
class Header:
    description: str
    schema: Schema = field(default_factory=lambda: dict(STRING))
    required: bool = False


SECURITY_SCHEMES: dict[str, Schema] = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin API: Authorization: Bearer $SMI_ADMIN_TOKEN (16+ characters; "
        "unset, the admin API answers 401 to everyone).",
    },
    "metricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "/metrics: Authorization: Bearer $SMI_METRICS_TOKEN (unset, 401).",
    },
    "buyerKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Buyer-Key",
        "description": "The job's buyer key, handed once in the answer to POST /api/checkout: "
        "with it a job's status includes its download link (and, while it awaits payment, "
        "its checkout's address). A job id or a Checkout Session id proves nothing.",
    },
    "dashboardSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "smi_dashboard",
        "description": "The seller's dashboard session, set by POST /dashboard/sign-in "
        "(HttpOnly, SameSite=Strict; named __Secure-smi_dashboard over https). Every form "
        "also carries the session's csrf field and comes from the gateway's own origin.",
    },
}
Security = tuple[dict[str, list[str]], ...]
ADMIN: Security = ({"adminToken": []},)
METRICS: Security = ({"metricsToken": []},)
BUYER_OR_ANYONE: Security = ({}, {"buyerKey": []})  # anyone; more for the buyer
SIGNED_IN: Security = ({"dashboardSession": []},)

RETRY_AFTER = Header("seconds to wait before asking again", {"type": "integer"}, required=True)
NO_STORE_HEADER = Header("no-store: a status changes; never cache it")


@dataclass(frozen=True)
class Link:
    """An operation that takes what this answer gives (OpenAPI runtime expressions)."""

    operation_id: str
    parameters: Mapping[str, str]
    description: str = ""


@dataclass(frozen=True)
class Answer:
    """One status's answer: its body in each media type it may come in."""

    description: str
    body: Schema | None = None
    media_type: str = JSON
    headers: Mapping[str, Header] = field(default_factory=dict)
    links: Mapping[str, Link] = field(default_factory=dict)
    also: Mapping[str, Schema] = field(default_factory=dict)  # other media types, their bodies


@dataclass(frozen=True)
class Param:
    """A query, header or cookie parameter."""

    name: str
    where: str  # query | header | cookie
    description: str
    schema: Schema = field(default_factory=lambda: dict(STRING))
    required: bool = False


@dataclass(frozen=True)
class Body:
    description: str
    schema: Schema
    media_type: str = JSON
    required: bool = True


@dataclass(frozen=True)
class Operation:
    """What one path and method does, takes and answers."""

    operation_id: str
    summary: str
    tags: tuple[str, ...]
    answers: Mapping[int, Answer]
    errors: Mapping[int, str] = field(default_factory=dict)
    description: str = ""
    path: Mapping[str, str | Schema] = field(default_factory=dict)  # description, or schema
    params: Sequence[Param] = ()
    body: Body | None = None
    security: Sequence[Mapping[str, Sequence[str]]] | None = None
    error_media_types: tuple[str, ...] = (JSON,)
    head: bool = False  # also described for HEAD (the same answers, without bodies)


def described(operation: Operation) -> Callable[[T], T]:
    """Declare what an endpoint (or a mounted app) does, for ``document``."""

    def mark(endpoint: T) -> T:
        setattr(endpoint, ATTRIBUTE, operation)
        return endpoint

    return mark


def declaration_of(endpoint: Any) -> Operation | None:
    """The operation declared on ``endpoint`` or on what it wraps (a guard's inner handler)."""
    seen = 0
    while endpoint is not None and seen < 10:
        found = getattr(endpoint, ATTRIBUTE, None)
        if isinstance(found, Operation):
            return found
        endpoint, seen = getattr(endpoint, "__wrapped__", None), seen + 1
    return None


class DescriptionError(ValueError):
    """A route without a declaration, a declaration that does not fit its route."""


@dataclass(frozen=True)
class Door:
    """One path and method of the app, and what is declared for it."""

    path: str
    method: str
    operation: Operation | None
    path_params: tuple[str, ...]


def doors(routes: Sequence[BaseRoute]) -> Iterator[Door]:
    """Every path and method the routes answer (HEAD where a declaration asks for it)."""
    for route in routes:
        if isinstance(route, Route):
            declared = declaration_of(route.endpoint)
            params = tuple(route.param_convertors)
            methods = sorted((route.methods or {"GET"}) - {"HEAD"})
            if declared is not None and declared.head:
                methods.append("HEAD")
            for method in methods:
                yield Door(route.path_format, method, declared, params)
        elif isinstance(route, Mount):
            declared = declaration_of(route.app)
            yield Door(f"{route.path}/{{path}}", "GET", declared, ("path",))
            if declared is not None and declared.head:
                yield Door(f"{route.path}/{{path}}", "HEAD", declared, ("path",))


def document(routes: Sequence[BaseRoute], config: GatewayConfig | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (as a gateway of ``config`` answers: its
    address, the models it offers); ``DescriptionError`` for a route without a declaration
    or a declaration that does not fit its route."""
    paths: dict[str, dict[str, Any]] = {}
    ids: dict[str, str] = {}
    for door in doors(routes):
        where = f"{door.method} {door.path}"
        if door.operation is None:
            raise DescriptionError(f"{where} has no description (@described beside it)")
        if set(door.operation.path) != set(door.path_params):
            raise DescriptionError(
                f"{where}: the route's path parameters are {sorted(door.path_params)}, "
                f"its description names {sorted(door.operation.path)}"
            )
        operation_id = door.operation.operation_id + ("Head" if door.method == "HEAD" else "")
        if operation_id in ids:
            raise DescriptionError(f"{where} and {ids[operation_id]} are both {operation_id}")
        ids[operation_id] = where
        methods = paths.setdefault(door.path, {})
        if door.method.lower() in methods:
            raise DescriptionError(f"{where} is described twice")
        methods[door.method.lower()] = _operation(door, operation_id)
    for methods in paths.values():
        for described_op in methods.values():
            for answer in described_op["responses"].values():
                for link in answer.get("links", {}).values():
                    if link["operationId"] not in ids:
                        raise DescriptionError(f"a link names {link['operationId']}: no such one")
    info = {
        "title": "Sell My Images gateway",
        "version": _version(),
        "description": DESCRIPTION,
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": info,
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {
                name: CONFIGURED[name](config) if config and name in CONFIGURED else body
                for name, body in sorted(SCHEMAS.items())
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
        "tags": TAGS,
    }
    if config is not None:
        doc["servers"] = [{"url": config.public_url}]
    return doc


DESCRIPTION = """\
Sell 4x high-resolution versions of a website's images: the customer API \
that the storefront script (smi-checkout.js) calls, free previews, signed \
downloads, Stripe's webhook, the admin API (bearer token), health and \
metrics, and the seller's dashboard (HTML pages behind a sign-in).

Every error of the API is `{"error": {"type", "message"}}` (the \
dashboard's pages say why on a page); 429 and 503 carry `Retry-After` \
(seconds). A path or query holding a NUL or a lone surrogate is answered \
400 `invalid_characters` at every door."""

TAGS = [
    {"name": "customer", "description": "what a shop's page calls, from any origin it allows"},
    {"name": "previews", "description": "a free square of the buyer's image, before paying"},
    {"name": "downloads", "description": "the result, for a signed link"},
    {"name": "webhooks", "description": "Stripe's events, signed with the webhook secret"},
    {"name": "admin", "description": "the seller's API: Authorization: Bearer SMI_ADMIN_TOKEN"},
    {"name": "operations", "description": "health, readiness, metrics and this description"},
    {"name": "dashboard", "description": "the seller's dashboard: HTML pages and their forms"},
]


def _version() -> str:
    try:
        return metadata.version("sell-my-images")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _header(header: Header) -> Schema:
    described_header: Schema = {"description": header.description, "schema": header.schema}
    if header.required:
        described_header["required"] = True
    return described_header


def _path_param(name: str, declared: str | Schema) -> Schema:
    if isinstance(declared, str):
        return {"name": name, "in": "path", "required": True, "description": declared,
                "schema": dict(STRING)}  # fmt: skip
    body = dict(declared)
    description = body.pop("description", "")
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": body}  # fmt: skip


def _answer(answer: Answer, head: bool) -> Schema:
    out: Schema = {"description": answer.description}
    if answer.headers:
        out["headers"] = {name: _header(h) for name, h in answer.headers.items()}
    bodies = {answer.media_type: answer.body, **answer.also} if answer.body is not None else {}
    if bodies and not head:  # an answer to HEAD has the headers alone
        out["content"] = {media_type: {"schema": body} for media_type, body in bodies.items()}
    if answer.links and not head:
        out["links"] = {
            name: {
                "operationId": link.operation_id,
                "parameters": dict(link.parameters),
                **({"description": link.description} if link.description else {}),
            }
            for name, link in answer.links.items()
        }
    return out


INVALID_CHARACTERS = "invalid_characters: the path or query holds a NUL or a lone surrogate"


def error_answer(status: int, words: str, media_types: tuple[str, ...] = (JSON,)) -> Answer:
    """The error answer of ``status``: ``Error`` as JSON (a page's words as HTML)."""
    headers: dict[str, Header] = {}
    if status in (429, 503):
        headers["Retry-After"] = RETRY_AFTER
    if status == 401 and JSON in media_types:
        headers["WWW-Authenticate"] = Header('Bearer realm="…": the token this door takes')
    bodies = {m: (ERROR if m == JSON else {"type": "string"}) for m in media_types}
    first, *others = bodies
    return Answer(
        words,
        bodies[first],
        media_type=first,
        headers=headers,
        also={m: bodies[m] for m in others},
    )


def _operation(door: Door, operation_id: str) -> Schema:
    declared = door.operation
    assert declared is not None
    head = door.method == "HEAD"
    answers: dict[int, Answer] = dict(declared.answers)
    for status, words in declared.errors.items():
        if status in answers:
            raise DescriptionError(f"{door.method} {door.path}: {status} is declared twice")
        answers[status] = error_answer(status, words, declared.error_media_types)
    if 400 not in answers:  # the middleware's answer at every door (gateway/http/requests.py)
        answers[400] = error_answer(400, INVALID_CHARACTERS)
    # What the app answers in JSON whatever the door: text no database stores (400), the
    # database or the broker away (503); a page's door says so in JSON too.
    for status, words in ((400, INVALID_CHARACTERS), (503, "the database or the broker")):
        kept = answers.get(status)
        if kept is not None and JSON not in (kept.media_type, *kept.also):
            answers[status] = Answer(
                f"{kept.description}; or, as JSON, {words}",
                kept.body,
                kept.media_type,
                kept.headers,
                kept.links,
                {**kept.also, JSON: ERROR},
            )
    out: Schema = {
        "operationId": operation_id,
        "summary": declared.summary,
        "tags": list(declared.tags),
    }
    if declared.description:
        out["description"] = declared.description
    parameters = [_path_param(name, declared.path[name]) for name in door.path_params]
    for param in declared.params:
        described_param: Schema = {
            "name": param.name,
            "in": param.where,
            "description": param.description,
            "schema": param.schema,
        }
        if param.required:
            described_param["required"] = True
        parameters.append(described_param)
    if parameters:
        out["parameters"] = parameters
    if declared.body is not None:
        out["requestBody"] = {
            "description": declared.body.description,
            "required": declared.body.required,
            "content": {declared.body.media_type: {"schema": declared.body.schema}},
        }
    out["responses"] = {str(status): _answer(answers[status], head) for status in sorted(answers)}
    if declared.security is not None:
        out["security"] = [dict(requirement) for requirement in declared.security]
    return out


@described(
    Operation(
        "getOpenApi",
        "This description (OpenAPI 3.1)",
        tags=("operations",),
        answers={200: Answer("the OpenAPI document", {"type": "object"})},
    )
)
async def openapi_json(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        state.openapi = document(request.app.routes, state.services.config)
    return JSONResponse(state.openapi)


ROUTES = [Route("/openapi.json", openapi_json, methods=["GET"])]
