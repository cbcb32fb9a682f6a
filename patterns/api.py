"""Declared, validated HTTP APIs: one place says what a route accepts, checks it, and documents it.

Protects against: bad input reaching domain code (and coming back as a 500 with a stack trace),
and API documents that drift from the code. Each route declares its JSON body and query
parameters as JSON Schema; the request is checked before the view runs, and a failure is a 400
naming every bad field. The same declarations build the service's OpenAPI 3 document, served at
`/openapi.json`, which contract tests (schemathesis) then use to throw bad input at the service.

    api = Api(app, title="products", tokens=tokens)

    @api.post("/api/v1/products", body=NEW_PRODUCT, auth="admin", status=201,
              summary="Create a product", response=PRODUCT)
    def create_product(body: dict, user: Claims):
        return catalog.create(body)

A view returns a dict or list (sent as JSON with the declared status) or a Flask response.
Views receive only what they declare: `body=`, `query=`, `user=` and the path parameters.
Domain code raises `ApiError` subclasses (`NotFound`, `Conflict`, ...); they become JSON errors.

Knobs: `auth` per route — False (public), True (any valid bearer token) or a role name.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from jsonschema import Draft202012Validator, ValidationError

from patterns.auth import Claims, TokenError, Tokens
from patterns.logs import request_id_var
from patterns.web import error_body

Schema = dict[str, Any]

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "request_id": {"type": "string"},
        "fields": {"type": "array", "items": {"type": "object"}}}}},
}

PAGE_QUERY: dict[str, Schema] = {
    "page": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 1},
    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
}


class ApiError(Exception):
    """A request the domain refuses; `status` and `code` say how, `message` says why."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def error_document(error: ApiError) -> dict[str, Any]:
    """An error's body as the API sends it, kept by an idempotent endpoint so that a repeat
    of the request gets the very same answer."""
    body = {"code": error.code, "message": error.message, **error.details}
    if request_id_var.get():
        body["request_id"] = request_id_var.get()
    return {"error": body}


def send_stored(status: int, body: Any) -> Response:
    """Send a stored answer as it is: a repeat gets exactly what the first call got."""
    sent = jsonify(body)
    sent.status_code = status
    return sent


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Unprocessable(ApiError):
    status, code = 422, "unprocessable"


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


# What a rule asks for, said without quoting the refused value (it may be a password).
_RULES = {
    "type": "must be of type {}",
    "minLength": "must be at least {} characters long",
    "maxLength": "must be at most {} characters long",
    "minimum": "must be at least {}",
    "maximum": "must be at most {}",
    "exclusiveMinimum": "must be greater than {}",
    "exclusiveMaximum": "must be less than {}",
    "minItems": "must have at least {} items",
    "maxItems": "must have at most {} items",
    "pattern": "must match the pattern {}",
    "format": "must be a valid {}",
    "enum": "must be one of {}",
    "const": "must be {}",
}


def _describe(error: ValidationError) -> str:
    rule = _RULES.get(str(error.validator))
    if rule is None:  # required, additionalProperties, ...: their messages name keys, not values
        return error.message[:300]
    return rule.format(json.dumps(error.validator_value))[:300]


def _operation_id(method: str, path: str) -> str:
    return f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}"


def _field_errors(validator: Draft202012Validator, instance: Any, prefix: str) -> list[dict]:
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [{"field": ".".join([prefix, *map(str, error.absolute_path)]).strip("."),
             "message": _describe(error)} for error in errors]


def _coerce(value: str, schema: Schema) -> Any:
    """Query strings are text: turn them into the declared type, or leave them for the
    validator to reject."""
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "boolean" and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
    except ValueError:
        pass
    return value


class Api:
    def __init__(self, app: Flask, *, title: str, version: str = "1.0.0",
                 description: str = "", tokens: Tokens | None = None) -> None:
        self.app = app
        self.tokens = tokens
        self.document: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": title, "version": version, "description": description},
            "paths": {},
            "components": {
                "schemas": {"Error": ERROR},
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                               "bearerFormat": "JWT"}},
            },
        }
        app.register_error_handler(ApiError, self._api_error)
        app.add_url_rule("/openapi.json", "openapi", lambda: jsonify(self.document))

    def serve_document(self, build: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Answer /openapi.json with `build(own document)` instead of the document alone: the
        gateway adds the routes it forwards for other services."""
        self.app.view_functions["openapi"] = lambda: jsonify(build(self.document))

    @staticmethod
    def _api_error(error: ApiError) -> tuple[Response, int]:
        return error_body(error.status, error.code, error.message, **error.details)

    def get(self, rule: str, **spec: Any) -> Callable:
        return self.route("GET", rule, **spec)

    def post(self, rule: str, **spec: Any) -> Callable:
        return self.route("POST", rule, **spec)

    def put(self, rule: str, **spec: Any) -> Callable:
        return self.route("PUT", rule, **spec)

    def patch(self, rule: str, **spec: Any) -> Callable:
        return self.route("PATCH", rule, **spec)

    def delete(self, rule: str, **spec: Any) -> Callable:
        return self.route("DELETE", rule, **spec)

    def route(self, method: str, rule: str, *, summary: str, body: Schema | None = None,
              query: Mapping[str, Schema] | None = None, auth: bool | str = False,
              status: int = 200, response: Schema | None = None,
              errors: tuple[int, ...] = (), tags: tuple[str, ...] = ()) -> Callable:
        body_validator = Draft202012Validator(body) if body is not None else None
        query = dict(query or {})
        query_validators = {name: Draft202012Validator(schema) for name, schema in query.items()}

        def decorate(view: Callable) -> Callable:
            @functools.wraps(view)
            def endpoint(**path_params: Any) -> Any:
                kwargs: dict[str, Any] = dict(path_params)
                if auth:
                    kwargs["user"] = self.authenticate(None if auth is True else auth)
                if query:
                    kwargs["query"] = self._read_query(query, query_validators)
                if body_validator is not None:
                    kwargs["body"] = self._read_body(body_validator)
                result = view(**kwargs)
                if isinstance(result, Response):
                    return result
                return jsonify(result), status

            # Endpoint names come from the route, so two views may share a function name.
            self.app.add_url_rule(rule, _operation_id(method, _openapi_path(rule)), endpoint,
                                  methods=[method])
            self._document(method, rule, summary, body, query, auth, status, response,
                           errors, tags)
            return endpoint

        return decorate

    # -- request reading ---------------------------------------------------------------------
    def authenticate(self, role: str | None = None) -> Claims:
        """The caller's verified token claims; 401 without a valid token, 403 without the role."""
        if self.tokens is None:
            raise RuntimeError("this Api was built without tokens; pass tokens= to use auth")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("a bearer token is required (Authorization: Bearer <jwt>)")
        try:
            claims = self.tokens.verify(token.strip())
        except TokenError as error:
            raise Unauthorized(f"invalid token: {error}") from None
        if role and not claims.has_role(role):
            raise Forbidden(f"this needs the {role!r} role")
        return claims

    @staticmethod
    def _read_body(validator: Draft202012Validator) -> Any:
        body = request.get_json(silent=True)
        if body is None:
            raise BadRequest("the body must be JSON (Content-Type: application/json)")
        fields = _field_errors(validator, body, "")
        if fields:
            raise BadRequest("the body is not valid", fields=fields)
        return body

    @staticmethod
    def _read_query(query: Mapping[str, Schema],
                    validators: Mapping[str, Draft202012Validator]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        fields: list[dict] = []
        for name, schema in query.items():
            if name in request.args:
                value = _coerce(request.args[name], schema)
                fields += _field_errors(validators[name], value, name)
                values[name] = value
            elif "default" in schema:
                values[name] = copy.deepcopy(schema["default"])
        if fields:
            raise BadRequest("query parameters are not valid", fields=fields)
        return values

    # -- the OpenAPI document ----------------------------------------------------------------
    def _document(self, method: str, rule: str, summary: str, body: Schema | None,
                  query: Mapping[str, Schema], auth: bool | str, status: int,
                  response: Schema | None, errors: tuple[int, ...],
                  tags: tuple[str, ...]) -> None:
        path = _openapi_path(rule)
        error = {"description": "error", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
        operation: dict[str, Any] = {
            "summary": summary,
            "operationId": _operation_id(method, path),
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"{(\w+)}", path)
            ] + [
                {"name": name, "in": "query", "required": False, "schema": schema}
                for name, schema in query.items()
            ],
            "responses": {str(status): {
                "description": "success",
                **({"content": {"application/json": {"schema": response}}} if response else {}),
            }},
        }
        codes = set(errors) | {400} if (body is not None or query) else set(errors)
        if auth:
            operation["security"] = [{"bearer": []}]
            codes |= {401} | ({403} if auth is not True else set())
        if "{" in path:
            codes.add(404)
        for code in sorted(codes):
            operation["responses"][str(code)] = error
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": body}}}
        if tags:
            operation["tags"] = list(tags)
        self.document["paths"].setdefault(path, {})[method.lower()] = operation
