"""The REST API's route registry: every endpoint is declared once, with its typed request and
response models and the roles allowed to call it, and both the aiohttp routes and the OpenAPI
document are generated from that declaration, so the document cannot drift from the code.

A module contributing endpoints creates an :class:`ApiRouter` (``router = ApiRouter("agents")``)
and declares handlers with ``@router.post("/api/...", body=Model, response=Model, roles=...)``.
:func:`setup` mounts the routers of the modules listed in ``ROUTER_MODULES`` (a missing module
is a capability not built yet) plus any passed explicitly, and serves ``/api/openapi.json``.

A handler is ``async def handler(ctx: Ctx, body: BodyModel | None) -> ResponseModel | None``.
Everything around it is uniform: bad JSON is a 400, a payload that does not match the model is a
422 naming each field, a missing or bad token a 401, a wrong role a 403, an :class:`ApiError` its
own status; every error body is ``{"error": {"code", "message", "fields": [{"field",
"message"}]}}``. An unexpected exception is logged and answered 500 without details; the fuzz
test makes sure no input reaches that.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import models_json_schema

from cti.services import SERVICES, Services

log = structlog.get_logger(__name__)

API_VERSION = "1.0.0"
OPENAPI_PATH = "/api/openapi.json"
#: modules that contribute routes (each exposes `router: ApiRouter`), in document order
ROUTER_MODULES = ("cti.api_agent", "cti.api_dialer", "cti.api_stats")

AGENT, SUPERVISOR, ADMIN = "agent", "supervisor", "admin"
ANY_ROLE = frozenset({AGENT, SUPERVISOR, ADMIN})
STAFF = frozenset({SUPERVISOR, ADMIN})

MAX_PATH_PARAM = 200
_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Strict(BaseModel):
    """Base of request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ErrorField(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[ErrorField] = []


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """Raised by handlers for an answer other than success; `field` names the culprit."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_response(
    status: int, code: str, message: str, fields: Iterable[tuple[str, str]] = ()
) -> web.Response:
    body = {
        "error": {
            "code": code,
            "message": message,
            "fields": [{"field": f, "message": m} for f, m in fields],
        }
    }
    return web.json_response(body, status=status)


@dataclass(frozen=True, slots=True)
class Ctx:
    """What a handler may use: the request, the services, who calls, validated parameters."""

    request: web.Request
    services_: Services | None
    principal: Any
    params: Mapping[str, str]
    query: Any

    @property
    def services(self) -> Services:
        if self.services_ is None:
            raise RuntimeError("this application has no services (cti.services.SERVICES)")
        return self.services_

    @property
    def role(self) -> str | None:
        return principal_role(self.principal)

    @property
    def username(self) -> str | None:
        return principal_name(self.principal)

    @property
    def agent_id(self) -> str | None:
        """The agent id the caller acts as (its own; never someone else's)."""
        return principal_agent(self.principal)

    def require_agent(self) -> str:
        agent = self.agent_id
        if agent is None:
            raise ApiError(403, "not_an_agent", "this account is not an agent")
        return agent

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF


def principal_role(p: Any) -> str | None:
    if p is None:
        return None
    role = getattr(p, "role", None)
    return str(getattr(role, "value", role)) if role is not None else None


def principal_name(p: Any) -> str | None:
    if p is None:
        return None
    for attr in ("username", "name", "subject", "sub"):
        v = getattr(p, attr, None)
        if isinstance(v, str) and v:
            return v
    return None


def principal_agent(p: Any) -> str | None:
    if p is None:
        return None
    v = getattr(p, "agent_id", None)
    if isinstance(v, str) and v:
        return v
    return principal_name(p)


Handler = Callable[[Ctx, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    description: str
    #: None: public (no token); otherwise the roles that may call it
    roles: frozenset[str] | None
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    errors: tuple[int, ...]
    tag: str
    #: path parameter name -> regex the value must match (else 404, like an unknown id)
    path_patterns: Mapping[str, str] = field(default_factory=dict)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def path_params(self) -> list[str]:
        return _PARAM_RE.findall(self.path)


@dataclass
class ApiRouter:
    """The routes one module contributes; mounted by :func:`setup`."""

    tag: str
    description: str = ""
    routes: list[Route] = field(default_factory=list)

    def add(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        roles: Iterable[str] | None = ANY_ROLE,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        errors: Iterable[int] = (),
        path_patterns: Mapping[str, str] | None = None,
    ) -> Callable[[Handler], Handler]:
        if not path.startswith("/api/"):
            raise ValueError(f"API paths live under /api/: {path}")

        def deco(fn: Handler) -> Handler:
            errs = set(errors) | {400}
            if roles is not None:
                errs |= {401, 403}
            if body is not None or query is not None:
                errs.add(422)
            if _PARAM_RE.search(path):
                errs.add(404)
            self.routes.append(
                Route(
                    method=method.upper(),
                    path=path,
                    handler=fn,
                    summary=summary,
                    description=inspect.cleandoc(fn.__doc__ or ""),
                    roles=None if roles is None else frozenset(roles),
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    errors=tuple(sorted(errs)),
                    tag=self.tag,
                    path_patterns=dict(path_patterns or {}),
                )
            )
            return fn

        return deco

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.add("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.add("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.add("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.add("DELETE", path, **kw)


def _principal(request: web.Request) -> Any:
    try:
        from cti.auth import principal_of
    except ModuleNotFoundError:  # pragma: no cover - auth is part of every real build
        return None
    try:
        return principal_of(request)
    except web.HTTPException:
        return None


def validation_fields(e: ValidationError, prefix: str) -> list[tuple[str, str]]:
    out = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        out.append((f"{prefix}.{loc}" if loc else prefix, err["msg"]))
    return out


def _wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    body_model = route.body
    query_model = route.query
    response_model = route.response
    roles = route.roles
    params = route.path_params
    patterns = {k: re.compile(v) for k, v in route.path_patterns.items()}

    async def handler(request: web.Request) -> web.StreamResponse:
        principal = _principal(request) if roles is not None else None
        if roles is not None:
            if principal is None:
                return error_response(401, "unauthorized", "a valid access token is required")
            if principal_role(principal) not in roles:
                return error_response(
                    403, "forbidden", f"this needs one of the roles: {', '.join(sorted(roles))}"
                )
        path_values: dict[str, str] = {}
        for name in params:
            value = request.match_info.get(name, "")
            pattern = patterns.get(name)
            if (
                not value
                or len(value) > MAX_PATH_PARAM
                or (pattern is not None and not pattern.fullmatch(value))
            ):
                return error_response(
                    404, "not_found", f"no such {name}", [(name, "unknown or too long")]
                )
            path_values[name] = value
        query: Any = None
        if query_model is not None:
            try:
                query = query_model.model_validate(dict(request.query))
            except ValidationError as e:
                return error_response(
                    422, "invalid_query", "invalid query parameters", validation_fields(e, "query")
                )
        body: Any = None
        if body_model is not None:
            raw = await request.read()
            try:
                body = body_model.model_validate_json(raw or b"null", strict=True)
            except ValidationError as e:
                if any(err["type"] == "json_invalid" for err in e.errors(include_url=False)):
                    return error_response(400, "invalid_json", "the request body is not valid JSON")
                return error_response(
                    422,
                    "invalid_body",
                    "the request body is invalid",
                    validation_fields(e, "body"),
                )
        ctx = Ctx(request, request.app.get(SERVICES), principal, path_values, query)
        try:
            result = await route.handler(ctx, body)
        except ApiError as e:
            fields = [(e.field, e.message)] if e.field else []
            return error_response(e.status, e.code, e.message, fields)
        except ValidationError as e:  # a handler validating a nested value itself
            return error_response(
                422, "invalid_body", "the request body is invalid", validation_fields(e, "body")
            )
        except web.HTTPException:
            raise
        except Exception:
            log.exception("api handler failed", path=route.path, method=route.method)
            return error_response(500, "internal", "internal error")
        if result is None or response_model is None:
            return web.Response(status=route.status if route.status != 200 else 204)
        if not isinstance(result, response_model):
            result = response_model.model_validate(result)
        return web.Response(
            body=result.model_dump_json(),
            status=route.status,
            content_type="application/json",
        )

    handler.__name__ = route.operation_id
    return handler


def collect_routers(extra: Iterable[ApiRouter] = ()) -> list[ApiRouter]:
    routers: list[ApiRouter] = []
    for name in ROUTER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        r = getattr(module, "router", None)
        if isinstance(r, ApiRouter):
            routers.append(r)
    for r in extra:
        if r not in routers:
            routers.append(r)
    return routers


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Under /api, aiohttp's own plain-text answers (no such path, method not allowed, body
    too large) become the API's JSON error shape, so clients parse every answer the same way."""
    if not request.path.startswith("/api"):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.content_type == "application/json" or e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            e.status, "http_error"
        )
        resp = error_response(e.status, code, e.reason or "error")
        if e.status == 405 and "Allow" in e.headers:
            resp.headers["Allow"] = e.headers["Allow"]
        return resp


def setup(app: web.Application, routers: Iterable[ApiRouter] | None = None) -> dict[str, Any]:
    """Mount every API route and the OpenAPI document on `app`; returns the document."""
    if json_errors not in app.middlewares:
        app.middlewares.append(json_errors)
    mounted = collect_routers(routers or ())
    routes = [r for router in mounted for r in router.routes]
    seen: set[tuple[str, str]] = set()
    for r in routes:
        key = (r.method, r.path)
        if key in seen:
            raise ValueError(f"route declared twice: {r.method} {r.path}")
        seen.add(key)
    doc = build_openapi(routes, mounted)
    doc_bytes = json.dumps(doc).encode()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=doc_bytes, content_type="application/json")

    app.router.add_get(OPENAPI_PATH, openapi, allow_head=False)
    for r in routes:
        app.router.add_route(r.method, r.path, _wrap(r))
    return doc


# --------------------------------------------------------------------------- OpenAPI

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "Malformed request (body is not JSON)",
    401: "Missing, invalid or expired token",
    403: "Not allowed for this account",
    404: "Not found",
    409: "Conflicts with the current state",
    422: "Invalid payload or parameters; `fields` names each",
    502: "A peer (Asterisk, CRM) failed",
    503: "A peer (Asterisk, CRM) is unavailable",
}


def build_openapi(routes: list[Route], routers: list[ApiRouter] | None = None) -> dict[str, Any]:
    ref = "#/components/schemas/{model}"
    models: list[tuple[type[BaseModel], Any]] = [(ErrorResponse, "serialization")]
    for r in routes:
        if r.body is not None:
            models.append((r.body, "validation"))
        if r.response is not None:
            models.append((r.response, "serialization"))
    uniq = list(dict.fromkeys(models))
    mapping, top = models_json_schema(uniq, ref_template=ref)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))

    def schema_ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return dict(mapping[(model, mode)])  # type: ignore[index]

    error_ref = schema_ref(ErrorResponse, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "operationId": r.operation_id,
            "summary": r.summary,
            "tags": [r.tag],
        }
        if r.description:
            op["description"] = r.description
        if r.roles is None:
            op["security"] = []
        else:
            op["x-roles"] = sorted(r.roles)
        parameters: list[dict[str, Any]] = []
        for name in r.path_params:
            pschema: dict[str, Any] = {"type": "string", "minLength": 1}
            pschema["maxLength"] = MAX_PATH_PARAM
            if name in r.path_patterns:
                pschema["pattern"] = r.path_patterns[name]
            parameters.append({"name": name, "in": "path", "required": True, "schema": pschema})
        if r.query is not None:
            qschema = r.query.model_json_schema(ref_template=ref)
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                prop = dict(prop)
                desc = prop.pop("description", None)
                param: dict[str, Any] = {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": prop,
                }
                if desc:
                    param["description"] = desc
                parameters.append(param)
        if parameters:
            op["parameters"] = parameters
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_ref(r.body, "validation")}},
            }
        responses: dict[str, Any] = {}
        if r.response is not None:
            responses[str(r.status)] = {
                "description": _STATUS_TEXT.get(r.status, "OK"),
                "content": {
                    "application/json": {"schema": schema_ref(r.response, "serialization")}
                },
            }
        else:
            responses["204" if r.status == 200 else str(r.status)] = {"description": "No content"}
        for code in r.errors:
            responses[str(code)] = {
                "description": _STATUS_TEXT.get(code, "Error"),
                "content": {"application/json": {"schema": error_ref}},
            }
        op["responses"] = responses
        paths.setdefault(r.path, {})[r.method.lower()] = op
    paths[OPENAPI_PATH] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["meta"],
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document of this API",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    tags = [{"name": "meta", "description": "The API description itself"}]
    for router in routers or []:
        tags.append({"name": router.tag, "description": router.description or router.tag})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CTI server API",
            "version": API_VERSION,
            "description": (
                "REST API of the CTI server: agent sessions, call work (notes, dispositions, "
                "cases, customers), click-to-call, callbacks and administration. Real-time "
                "messages (pops, call updates, agent state) travel over the /ws websocket "
                "(docs/protocol.md). Authenticate with POST /api/auth/login and send the "
                "access token as `Authorization: Bearer <token>`."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
