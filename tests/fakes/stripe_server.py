"""A local fake of Stripe's HTTP API, for tests that drive the official `stripe` package.

This module owns `FakeStripe`: a real HTTP server on 127.0.0.1 that keeps products, prices,
customers, Checkout and billing-portal sessions, events and subscriptions in memory, shaped
like Stripe's objects. Every request is checked against Stripe's OpenAPI description
(`stripe_spec`); a request Stripe would refuse gets Stripe's 400 error shape and is appended
to `FakeStripe.violations`, so a fixture can fail the test (see `tests.fakes.fixtures`).
"""

from __future__ import annotations

import contextlib
import copy
import http.server
import itertools
import json
import re
import secrets
import selectors
import socket
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Self

import stripe

from tests.fakes import stripe_form, stripe_spec
from tests.fakes.stripe_ids import new_id

JsonObject = dict[str, Any]
Handler = Callable[[JsonObject, Mapping[str, str]], JsonObject]

API_VERSION: str = stripe.api_version
"""The API version the installed `stripe` package pins (sent as `Stripe-Version`)."""

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
CHECKOUT_SESSION_LIFETIME = 24 * 60 * 60
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500

_TEST_KEY = re.compile(r"(sk|rk)_test_\w+")


class StripeApiError(Exception):
    """An error answered in Stripe's shape. `violation` marks a request Stripe would refuse
    whatever the state (a bug in the caller); state-dependent errors (an unknown id, a lookup
    key in use) are answered without being recorded as violations."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        violation: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code
        self.violation = violation

    def body(self) -> JsonObject:
        error: JsonObject = {"type": self.error_type, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        return {"error": error}


def _missing(noun: str, object_id: str, param: str = "id") -> StripeApiError:
    status = 404 if param == "id" else 400
    return StripeApiError(
        status, f"No such {noun}: '{object_id}'", param=param, code="resource_missing"
    )


@dataclass
class RecordedRequest:
    """One request the fake received, as decoded (params are still strings)."""

    method: str
    path: str
    params: JsonObject
    idempotency_key: str | None
    stripe_version: str | None
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: JsonObject
    headers: Mapping[str, str] = field(default_factory=dict)


class _Refused(Exception):
    """Raised while routing a request: answer with `reply` and run no handler."""

    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


@dataclass(frozen=True)
class _Stored:
    fingerprint: str
    reply: _Reply


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    timeout = 0  # handle_request() returns at once when the listening socket is not ready

    def __init__(self, fake: FakeStripe) -> None:
        super().__init__(("127.0.0.1", 0), _RequestHandler)
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self.connections_lock:
            open_connections = list(self.connections)
        for connection in open_connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # buffered: headers and body leave in one write, flushed per request
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._handle("get")

    def do_POST(self) -> None:
        self._handle("post")

    def do_DELETE(self) -> None:
        self._handle("delete")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the fake records requests in `FakeStripe.requests` instead."""

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8") if length else ""
        target = urllib.parse.urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.fake.dispatch(method, target.path, target.query, body, headers)
        payload = json.dumps(reply.body, indent=2).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class FakeStripe:
    """Stripe's API on 127.0.0.1, in memory, refusing what Stripe would refuse.

    Use it as a context manager, or `start()` and `stop()`. Point `stripe.StripeClient` at
    `base_url` (see `client()`). Tests inspect `requests`, `violations`, `objects(kind)`, and
    add what only Stripe creates (events, subscriptions) with `add_event` / `put_subscription`.
    """

    api_key = "sk_test_fake"

    def __init__(self, *, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock or (lambda: int(time.time()))
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._routes: dict[tuple[str, str], Handler] = {
            ("post", "/v1/products"): self._create_product,
            ("get", "/v1/products"): self._list_products,
            ("get", "/v1/products/{id}"): self._retrieve_product,
            ("post", "/v1/products/{id}"): self._update_product,
            ("post", "/v1/prices"): self._create_price,
            ("get", "/v1/prices"): self._list_prices,
            ("get", "/v1/prices/{price}"): self._retrieve_price,
            ("post", "/v1/prices/{price}"): self._update_price,
            ("post", "/v1/customers"): self._create_customer,
            ("get", "/v1/customers/{customer}"): self._retrieve_customer,
            ("post", "/v1/customers/{customer}"): self._update_customer,
            ("post", "/v1/checkout/sessions"): self._create_checkout_session,
            ("get", "/v1/checkout/sessions/{session}"): self._retrieve_checkout_session,
            ("get", "/v1/checkout/sessions/{session}/line_items"): self._list_line_items,
            ("post", "/v1/billing_portal/sessions"): self._create_portal_session,
            ("get", "/v1/events"): self._list_events,
            ("get", "/v1/events/{id}"): self._retrieve_event,
            ("get", "/v1/subscriptions"): self._list_subscriptions,
            ("get", "/v1/subscriptions/{subscription_exposed_id}"): self._retrieve_subscription,
        }
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.ignored_params: list[str] = []
        self._objects: dict[str, JsonObject] = {}
        self._order: dict[str, int] = {}
        self._sequence = itertools.count()
        self._idempotency: dict[str, _Stored] = {}
        self._line_items: dict[str, list[JsonObject]] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeStripe is already running")
        stripe_spec.spec()  # load (or read the cache) before the first request
        self._server = _Server(self)
        self._wake = socket.socketpair()
        self._thread = threading.Thread(
            target=self._serve, name=f"fake-stripe-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and the listening socket."""
        server, thread, wake = self._server, self._thread, self._wake
        if server is None or thread is None or wake is None:
            return
        wake[1].send(b"x")
        thread.join()
        server.drop_connections()
        server.server_close()
        for end in wake:
            end.close()
        self._server = self._thread = self._wake = None

    def _serve(self) -> None:
        server, wake = self._server, self._wake
        assert server is not None and wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(wake[0], selectors.EVENT_READ)
            while True:
                ready = selector.select()
                if any(key.fileobj is wake[0] for key, _ in ready):
                    return
                server.handle_request()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeStripe is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`, for `base_addresses={"api": ...}`."""
        return f"http://127.0.0.1:{self.port}"

    def client(self, **options: Any) -> stripe.StripeClient:
        """A `stripe.StripeClient` pointed at this fake, with retries off."""
        settings: dict[str, Any] = {
            "base_addresses": {"api": self.base_url},
            "max_network_retries": 0,
            **options,
        }
        return stripe.StripeClient(self.api_key, **settings)

    # ------------------------------------------------------------------ test helpers

    def reset(self) -> None:
        """Forget every object, request, violation and idempotency key."""
        with self._lock:
            self.requests.clear()
            self.violations.clear()
            self.ignored_params.clear()
            self._objects.clear()
            self._order.clear()
            self._idempotency.clear()
            self._line_items.clear()

    def take_violations(self) -> list[str]:
        """The violations so far, clearing them (for tests that provoke one on purpose)."""
        with self._lock:
            taken = list(self.violations)
            self.violations.clear()
            return taken

    def objects(self, kind: str) -> list[JsonObject]:
        """Copies of the stored objects whose `object` is `kind` (e.g. "price"), newest first."""
        with self._lock:
            found = [o for o in self._objects.values() if o.get("object") == kind]
            return copy.deepcopy(self._newest_first(found))

    def object(self, object_id: str) -> JsonObject:
        """A copy of one stored object; KeyError when there is none."""
        with self._lock:
            return copy.deepcopy(self._objects[object_id])

    def put_object(self, obj: Mapping[str, Any], *, validate: bool = True) -> JsonObject:
        """Add or replace an object (keyed by `id`), checked against the schema its `object`
        field names unless `validate` is false."""
        stored = copy.deepcopy(dict(obj))
        kind = stored.get("object")
        if not isinstance(stored.get("id"), str) or not isinstance(kind, str):
            raise ValueError("a Stripe object needs string `id` and `object` fields")
        if validate:
            problems = stripe_spec.validate_object(kind, stored)
            if problems:
                raise ValueError(f"not a valid Stripe {kind}:\n" + "\n".join(problems))
        with self._lock:
            self._store(stored)
        return copy.deepcopy(stored)

    def put_subscription(self, obj: Mapping[str, Any], *, validate: bool = True) -> JsonObject:
        """Add or replace a subscription (as Stripe would after Checkout or a renewal)."""
        if obj.get("object") != "subscription":
            raise ValueError("put_subscription takes an object with object='subscription'")
        return self.put_object(obj, validate=validate)

    def add_event(self, event: Mapping[str, Any], *, validate: bool = True) -> JsonObject:
        """Add an event for `GET /v1/events`; checked (envelope and `data.object`) against
        the spec unless `validate` is false."""
        stored = copy.deepcopy(dict(event))
        if stored.get("object") != "event":
            raise ValueError("add_event takes an object with object='event'")
        if validate:
            problems = stripe_spec.validate_event(stored)
            if problems:
                raise ValueError("not a valid Stripe event:\n" + "\n".join(problems))
        with self._lock:
            self._store(stored)
        return copy.deepcopy(stored)

    # ------------------------------------------------------------------ request handling

    def dispatch(
        self, method: str, path: str, query: str, body: str, headers: Mapping[str, str]
    ) -> _Reply:
        """Answer one HTTP request (called from the server's handler threads)."""
        record = RecordedRequest(
            method=method.upper(),
            path=path,
            params={},
            idempotency_key=headers.get("idempotency-key"),
            stripe_version=headers.get("stripe-version"),
            headers=dict(headers),
        )
        with self._lock:
            self.requests.append(record)
            try:
                reply = self._answer(record, method, path, body if method == "post" else query)
            except Exception:  # a bug in the fake: fail the test loudly, not the server
                trace = traceback.format_exc()
                self.violations.append(f"{record.method} {path}: fake Stripe crashed:\n{trace}")
                reply = _Reply(
                    500, {"error": {"type": "api_error", "message": "fake Stripe crashed"}}
                )
            record.status = reply.status
        extra = {
            "Request-Id": new_id("req_", 14),
            "Stripe-Version": record.stripe_version or API_VERSION,
        }
        if record.idempotency_key:
            extra["Idempotency-Key"] = record.idempotency_key
        return _Reply(reply.status, reply.body, {**extra, **reply.headers})

    def _answer(self, record: RecordedRequest, method: str, path: str, form: str) -> _Reply:
        try:
            handler, check = self._route(record, method, path, form)
        except _Refused as refused:
            return refused.reply
        assert check.operation is not None
        key = record.idempotency_key if method == "post" else None
        fingerprint = json.dumps([record.method, path, check.params], sort_keys=True)
        if key is not None and key in self._idempotency:
            return self._replay(key, fingerprint)
        try:
            reply = _Reply(200, handler(check.params, check.operation.path_params))
        except StripeApiError as error:
            if error.violation:
                self.violations.append(f"{record.method} {path}: {error.message}")
            reply = _Reply(error.status, error.body())
        if key is not None:
            self._idempotency[key] = _Stored(fingerprint, reply)
        return reply

    def _route(
        self, record: RecordedRequest, method: str, path: str, form: str
    ) -> tuple[Handler, stripe_spec.RequestCheck]:
        """The handler and checked params for a request, or `_Refused` with the answer."""
        auth = self._check_auth(record.headers.get("authorization"))
        if auth is not None:
            raise _Refused(auth)
        where = f"{record.method} {path}"
        try:
            record.params = stripe_form.decode(form)
        except stripe_form.FormError as error:
            self._refuse(where, StripeApiError(400, str(error), param=error.key))
        check = stripe_spec.check_request(method, path, record.params)
        if check.operation is None:
            message = f"Unrecognized request URL ({record.method}: {path})."
            self._refuse(where, StripeApiError(404, message))
        for problem in check.problems[1:]:
            self.violations.append(f"{where}: {problem.message}")
        if check.problems:
            first = check.problems[0]
            self._refuse(where, StripeApiError(400, first.message, param=first.param))
        handler = self._routes.get((check.operation.method, check.operation.template))
        if handler is None:
            message = f"fake Stripe does not implement {record.method} {check.operation.template}"
            self._refuse(where, StripeApiError(400, message))
        return handler, check

    def _refuse(self, where: str, error: StripeApiError) -> NoReturn:
        self.violations.append(f"{where}: {error.message}")
        raise _Refused(_Reply(error.status, error.body()))

    def _replay(self, key: str, fingerprint: str) -> _Reply:
        stored = self._idempotency[key]
        if stored.fingerprint != fingerprint:
            message = (
                "Keys for idempotent requests can only be used with the same parameters "
                f"they were first used with. Try using a key other than '{key}' if you "
                "meant to execute a different request."
            )
            error = StripeApiError(400, message, error_type="idempotency_error")
            return _Reply(400, error.body())
        return _Reply(stored.reply.status, stored.reply.body, {"Idempotent-Replayed": "true"})

    def _check_auth(self, header: str | None) -> _Reply | None:
        scheme, _, key = (header or "").partition(" ")
        if not header or scheme != "Bearer" or not key:
            message = (
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_KEY')."
            )
        elif not _TEST_KEY.fullmatch(key):
            message = f"Invalid API Key provided: {key[:8]}****{key[-4:]}"
        else:
            return None
        return _Reply(401, StripeApiError(401, message).body())

    # ------------------------------------------------------------------ storage helpers

    def _now(self) -> int:
        return self._clock()

    def _store(self, obj: JsonObject) -> None:
        object_id = obj["id"]
        if object_id not in self._order:
            self._order[object_id] = next(self._sequence)
        self._objects[object_id] = obj

    def _sort_key(self, obj: Mapping[str, Any]) -> tuple[int, int]:
        return (int(obj.get("created") or 0), self._order.get(obj["id"], -1))

    def _newest_first(self, items: Iterable[JsonObject]) -> list[JsonObject]:
        return sorted(items, key=self._sort_key, reverse=True)

    def _get(self, kind: str, object_id: str, *, param: str = "id") -> JsonObject:
        obj = self._objects.get(object_id)
        if obj is None or obj.get("object") != kind:
            raise _missing(kind, object_id, param)
        return obj

    def _note_ignored(self, template: str, params: Mapping[str, Any], handled: set[str]) -> None:
        for name in params:
            if name not in handled and name != "expand":
                self.ignored_params.append(f"{template}: {name}")

    # ------------------------------------------------------------------ lists and expansion

    def _page(self, items: list[JsonObject], params: Mapping[str, Any], url: str) -> JsonObject:
        limit = params.get("limit", DEFAULT_LIMIT)
        if not 1 <= limit <= MAX_LIMIT:
            raise StripeApiError(
                400,
                f"Invalid limit: must be between 1 and {MAX_LIMIT}",
                param="limit",
                violation=True,
            )
        items = self._newest_first(self._created_filter(items, params.get("created")))
        after, before = params.get("starting_after"), params.get("ending_before")
        if after is not None:
            cursor = self._sort_key(self._cursor(after, "starting_after"))
            rest = [item for item in items if self._sort_key(item) < cursor]
            page, has_more = rest[:limit], len(rest) > limit
        elif before is not None:
            cursor = self._sort_key(self._cursor(before, "ending_before"))
            rest = [item for item in items if self._sort_key(item) > cursor]
            page, has_more = rest[-limit:], len(rest) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        expand = [self._list_expansion(path) for path in params.get("expand", [])]
        data = [self._expanded(item, expand) for item in page]
        return {"object": "list", "data": data, "has_more": has_more, "url": url}

    def _cursor(self, object_id: str, param: str) -> JsonObject:
        obj = self._objects.get(object_id)
        if obj is None:
            raise _missing("object", object_id, param)
        return obj

    @staticmethod
    def _created_filter(items: list[JsonObject], created: Any) -> list[JsonObject]:
        if created is None:
            return items
        if isinstance(created, int):
            return [item for item in items if item.get("created") == created]
        tests: dict[str, Callable[[int, int], bool]] = {
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
        }
        return [
            item
            for item in items
            if all(tests[op](int(item.get("created") or 0), bound) for op, bound in created.items())
        ]

    @staticmethod
    def _list_expansion(path: str) -> str:
        if not path.startswith("data."):
            raise StripeApiError(
                400,
                f"This property cannot be expanded ({path}). You may want to try expanding "
                f"'data.{path}' instead.",
                param="expand",
                violation=True,
            )
        return path.removeprefix("data.")

    def _expanded(self, obj: JsonObject, paths: Iterable[str]) -> JsonObject:
        result = copy.deepcopy(obj)
        for path in paths:
            self._expand(result, path.split("."), path)
        return result

    def _expand(self, obj: JsonObject, segments: list[str], path: str) -> None:
        head, rest = segments[0], segments[1:]
        if obj.get("object") == "list" and head == "data" and rest:
            for item in obj.get("data", []):
                self._expand(item, rest, path)
            return
        value = obj.get(head)
        if isinstance(value, str):
            if head not in stripe_spec.expandable_fields(str(obj.get("object"))):
                raise StripeApiError(
                    400,
                    f"This property cannot be expanded ({path}).",
                    param="expand",
                    violation=True,
                )
            target = self._objects.get(value)
            if target is None:
                raise StripeApiError(
                    400,
                    f"fake Stripe cannot expand {path}: it holds no object {value!r}",
                    param="expand",
                    violation=True,
                )
            value = copy.deepcopy(target)
            obj[head] = value
        elif head not in obj:
            raise StripeApiError(
                400, f"This property cannot be expanded ({path}).", param="expand", violation=True
            )
        if rest and isinstance(value, dict):
            self._expand(value, rest, path)

    def _respond(self, obj: JsonObject, params: Mapping[str, Any]) -> JsonObject:
        return self._expanded(obj, params.get("expand", []))

    # ------------------------------------------------------------------ metadata

    @staticmethod
    def _metadata(current: Mapping[str, str], update: Any, param: str = "metadata") -> JsonObject:
        """Stripe's metadata rules: merge; an empty value unsets a key, and an empty
        `metadata` unsets them all."""
        if update is None:
            return dict(current)
        if update == "":
            return {}
        result = dict(current)
        for key, value in update.items():
            if len(key) > METADATA_MAX_KEY_LENGTH:
                raise StripeApiError(
                    400,
                    f"Metadata keys can have up to {METADATA_MAX_KEY_LENGTH} characters, "
                    f"but '{key}' has {len(key)}.",
                    param=f"{param}[{key}]",
                    violation=True,
                )
            if len(value) > METADATA_MAX_VALUE_LENGTH:
                raise StripeApiError(
                    400,
                    f"Metadata values can have up to {METADATA_MAX_VALUE_LENGTH} characters, "
                    f"but the value of '{key}' has {len(value)}.",
                    param=f"{param}[{key}]",
                    violation=True,
                )
            if value == "":
                result.pop(key, None)
            else:
                result[key] = value
        if len(result) > METADATA_MAX_KEYS:
            raise StripeApiError(
                400,
                f"Metadata can have up to {METADATA_MAX_KEYS} keys.",
                param=param,
                violation=True,
            )
        return result

    # ------------------------------------------------------------------ products

    _PRODUCT_FIELDS = frozenset(
        {"name", "active", "description", "images", "statement_descriptor", "unit_label", "url"}
    )

    def _create_product(self, params: JsonObject, _: Mapping[str, str]) -> JsonObject:
        self._note_ignored("POST /v1/products", params, {*self._PRODUCT_FIELDS, "id", "metadata"})
        product_id = params.get("id") or new_id("prod_", 14)
        if product_id in self._objects:
            raise StripeApiError(
                400, "Product already exists.", param="id", code="resource_already_exists"
            )
        now = self._now()
        product: JsonObject = {
            "id": product_id,
            "object": "product",
            "active": True,
            "created": now,
            "default_price": None,
            "description": None,
            "images": [],
            "livemode": False,
            "marketing_features": [],
            "metadata": self._metadata({}, params.get("metadata")),
            "name": params["name"],
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": None,
            "unit_label": None,
            "updated": now,
            "url": None,
        }
        self._apply_fields(product, params, self._PRODUCT_FIELDS)
        self._store(product)
        return self._respond(product, params)

    @staticmethod
    def _apply_fields(obj: JsonObject, params: Mapping[str, Any], names: Iterable[str]) -> None:
        """Copy plain fields; an empty string unsets one (to null, or to [] for a list)."""
        for name in names:
            if name not in params:
                continue
            value = params[name]
            if value == "" and name != "name":
                value = [] if isinstance(obj.get(name), list) else None
            obj[name] = value

    def _retrieve_product(self, params: JsonObject, path: Mapping[str, str]) -> JsonObject:
        return self._respond(self._get("product", path["id"]), params)

    def _update_product(self, params: JsonObject, path: Mapping[str, str]) -> JsonObject:
        product = self._get("product", path["id"])
        self._note_ignored(
            "POST /v1/products/{id}", params, {*self._PRODUCT_FIELDS, "metadata", "default_price"}
        )
        if "default_price" in params:
            price = self._get("price", params["default_price"], param="default_price")
            product["default_price"] = price["id"]
        self._apply_fields(product, params, self._PRODUCT_FIELDS)
        product["metadata"] = self._metadata(product["metadata"], params.get("metadata"))
        product["updated"] = self._now()
        return self._respond(product, params)

    def _list_products(self, params: JsonObject, _: Mapping[str, str]) -> JsonObject:
        items = [o for o in self._objects.values() if o.get("object") == "product"]
        if "active" in params:
            items = [o for o in items if o["active"] == params["active"]]
        if "ids" in params:
            items = [o for o in items if o["id"] in params["ids"]]
        self._note_ignored(
            "GET /v1/products",
            params,
            {"active", "ids", "created", "limit", "starting_after", "ending_before"},
        )
        return self._page(items, params, "/v1/products")

    # ------------------------------------------------------------------ prices

    def _create_price(self, params: JsonObject, _: Mapping[str, str]) -> JsonObject:
        self._note_ignored(
            "POST /v1/prices",
            params,
            {
                "product",
                "product_data",
                "unit_amount",
                "unit_amount_decimal",
                "currency",
                "recurring",
                "lookup_key",
                "transfer_lookup_key",
                "metadata",
                "nickname",
                "active",
                "tax_behavior",
            },
        )
        if "product" in params and "product_data" in params:
            raise StripeApiError(
                400,
                "You may only specify one of these parameters: product, product_data.",
                param="product",
                violation=True,
            )
        if "product" in params:
            product_id = self._get("product", params["product"], param="product")["id"]
        elif "product_data" in params:
            product_id = self._create_product(dict(params["product_data"]), {})["id"]
        else:
            raise StripeApiError(
                400, "Missing required param: product.", param="product", violation=True
            )
        if "unit_amount" in params and "unit_amount_decimal" in params:
            raise StripeApiError(
                400,
                "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
                param="unit_amount",
                violation=True,
            )
        if "unit_amount" in params:
            unit_amount: int | None = params["unit_amount"]
            unit_amount_decimal = str(unit_amount)
        elif "unit_amount_decimal" in params:
            unit_amount_decimal = params["unit_amount_decimal"]
            unit_amount = None
        else:
            raise StripeApiError(
                400, "Missing required param: unit_amount.", param="unit_amount", violation=True
            )
        recurring = params.get("recurring")
        price: JsonObject = {
            "id": new_id("price_1"),
            "object": "price",
            "active": params.get("active", True),
            "billing_scheme": "per_unit",
            "created": self._now(),
            "currency": str(params["currency"]).lower(),
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": self._metadata({}, params.get("metadata")),
            "nickname": params.get("nickname") or None,
            "product": product_id,
            "recurring": None
            if recurring is None
            else {
                "interval": recurring["interval"],
                "interval_count": recurring.get("interval_count", 1),
                "meter": recurring.get("meter"),
                "usage_type": recurring.get("usage_type", "licensed"),
            },
            "tax_behavior": params.get("tax_behavior", "unspecified"),
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "one_time" if recurring is None else "recurring",
            "unit_amount": unit_amount,
            "unit_amount_decimal": unit_amount_decimal,
        }
        if params.get("lookup_key"):
            self._take_lookup_key(price, params["lookup_key"], params.get("transfer_lookup_key"))
        self._store(price)
        return self._respond(price, params)

    def _take_lookup_key(self, price: JsonObject, lookup_key: str, transfer: bool | None) -> None:
        """Give `price` the lookup key; another price holding it refuses unless `transfer`,
        in which case it loses the key (Stripe keeps lookup keys unique across all prices,
        archived ones included)."""
        for other in self._objects.values():
            if (
                other.get("object") == "price"
                and other["id"] != price["id"]
                and other.get("lookup_key") == lookup_key
            ):
                if not transfer:
                    raise StripeApiError(
                        400,
                        f"A price (`{other['id']}`) already uses that lookup key.",
                        param="lookup_key",
                    )
                other["lookup_key"] = None
        price["lookup_key"] = lookup_key

    def _retrieve_price(self, params: JsonObject, path: Mapping[str, str]) -> JsonObject:
        return self._respond(self._get("price", path["price"]), params)

    def _update_price(self, params: JsonObject, path: Mapping[str, str]) -> JsonObject:
        price = self._get("price", path["price"])
        self._note_ignored(
            "POST /v1/prices/{price}",
            params,
            {"metadata", "active", "nickname", "lookup_key", "transfer_lookup_key", "tax_behavior"},
        )
        if "lookup_key" in params:
            if params["lookup_key"] == "":
                price["lookup_key"] = None
            else:
                self._take_lookup_key(
                    price, params["lookup_key"], params.get("transfer_lookup_key")
                )
        if "active" in params:
            price["active"] = params["active"]
        if "nickname" in params:
            price["nickname"] = params["nickname"] or None
        if "tax_behavior" in params:
            price["tax_behavior"] = params["tax_behavior"]
        price["metadata"] = self._metadata(price["metadata"], params.get("metadata"))
        return self._respond(price, params)

    def _list_prices(self, params: JsonObject, _: Mapping[str, str]) -> JsonObject:
        self._note_ignored(
            "GET /v1/prices",
            params,
            {
                "active",
                "currency",
                "lookup_keys",
                "product",
                "type",
                "recurring",
                "created",
                "limit",
                "starting_after",
                "ending_before",
            },
        )
        items = [o for o in self._objects.values() if o.get("object") == "price"]
        if "active" in params:
            items = [o for o in items if o["active"] == params["active"]]
        if "currency" in params:
            items = [o for o in items if o["currency"] == str(params["currency"]).lower()]
        if "lookup_keys" in params:
            items = [o for o in items if o.get("lookup_key") in params["lookup_keys"]]
        if "product" in params:
            items = [o for o in items if o["product"] == params["product"]]
        if "type" in params:
            items = [o for o in items if o["type"] == params["type"]]
        interval = (params.get("recurring") or {}).get("interval")
        if interval is not None:
            items = [o for o in items if (o.get("recurring") or {}).get("interval") == interval]
        return self._page(items, params, "/v1/prices")

    # ------------------------------------------------------------------ customers

    _CUSTOMER_FIELDS = frozenset({"email", "name", "description", "phone"})

    def _create_customer(self, params: JsonObject, _: Mapping[str, str]) -> JsonObject:
        self._note_ignored(
            "POST /v1/customers", params, {*self._CUSTOMER_FIELDS, "metadata", "preferred_locales"}
        )
        customer: JsonObject = {
            "id": new_id("cus_", 14),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": self._now(),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": None,
            "invoice_prefix": secrets.token_hex(4).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": self._metadata({}, params.get("metadata")),
            "name": None,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": list(params.get("preferred_locales") or []),
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        self._apply_fields(customer, params, self._CUSTOMER_FIELDS)
        self._store(customer)
        return self._respond(customer, params)

    def _retrieve_customer(self, params: JsonObject, path: Mapping[str, str]) -> JsonObject:
        return self._respond(self._get("customer", path["customer"]), params)

    def _update_customer(self, params: JsonObject, path: Mapping[str, str]) -> JsonObject:
        customer = self._get("customer", path["customer"])
        self._note_ignored(
            "POST /v1/customers/{customer}", params, {*self._CUSTOMER_FIELDS, "metadata"}
        )
        self._apply_fields(customer, params, self._CUSTOMER_FIELDS)
        customer["metadata"] = self._metadata(customer["metadata"], params.get("metadata"))
        return self._respond(customer, params)

    # ------------------------------------------------------------------ checkout

    def _create_checkout_session(self, params: JsonObject, _: Mapping[str, str]) -> JsonObject:
        self._note_ignored(
            "POST /v1/checkout/sessions",
            params,
            {
                "mode",
                "customer",
                "customer_email",
                "line_items",
                "success_url",
                "cancel_url",
                "client_reference_id",
                "metadata",
                "subscription_data",
                "payment_intent_data",
            },
        )
        mode = params.get("mode")
        if mode is None:
            raise StripeApiError(400, "Missing required param: mode.", param="mode", violation=True)
        if "customer" in params and "customer_email" in params:
            raise StripeApiError(
                400,
                "You may only specify one of these parameters: customer, customer_email.",
                param="customer",
                violation=True,
            )
        customer = (
            self._get("customer", params["customer"], param="customer")["id"]
            if "customer" in params
            else None
        )
        for name, allowed in (
            ("payment_intent_data", "payment"),
            ("subscription_data", "subscription"),
        ):
            if name in params and mode != allowed:
                raise StripeApiError(
                    400,
                    f"You can only specify `{name}` in `{allowed}` mode.",
                    param=name,
                    violation=True,
                )
        session_id = new_id("cs_test_a1", 58)
        items = self._checkout_items(mode, params.get("line_items") or [], session_id)
        currency = items[0]["currency"] if items else None
        amount = sum(item["amount_total"] for item in items)
        now = self._now()
        session: JsonObject = {
            "id": session_id,
            "object": "checkout.session",
            "adaptive_pricing": None,
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": amount,
            "amount_total": amount,
            "automatic_tax": {
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "billing_address_collection": None,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "client_secret": None,
            "collected_information": None,
            "consent": None,
            "consent_collection": None,
            "created": now,
            "currency": currency,
            "currency_conversion": None,
            "custom_fields": [],
            "custom_text": {
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            "customer": customer,
            "customer_creation": "if_required" if mode == "payment" and not customer else None,
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "discounts": [],
            "expires_at": now + CHECKOUT_SESSION_LIFETIME,
            "invoice": None,
            "invoice_creation": None,
            "livemode": False,
            "locale": None,
            "metadata": self._metadata({}, params.get("metadata")),
            "mode": mode,
            "payment_intent": None,
            "payment_link": None,
            "payment_method_collection": "always" if mode == "subscription" else None,
            "payment_method_configuration_details": None,
            "payment_method_options": None,
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "phone_number_collection": {"enabled": False},
            "recovered_from": None,
            "saved_payment_method_options": None,
            "setup_intent": None,
            "shipping_address_collection": None,
            "shipping_cost": None,
            "shipping_options": [],
            "status": "open",
            "submit_type": None,
            "subscription": None,
            "success_url": params.get("success_url"),
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted_page",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        for name in ("subscription_data", "payment_intent_data"):
            if name in params:
                self._metadata({}, params[name].get("metadata"), f"{name}[metadata]")
        self._line_items[session_id] = items
        self._store(session)
        return self._respond_session(session, params)

    def _checkout_items(
        self, mode: str, line_items: list[JsonObject], session_id: str
    ) -> list[JsonObject]:
        if mode in ("payment", "subscription") and not line_items:
            raise StripeApiError(
                400,
                f"`line_items` is required in `{mode}` mode.",
                param="line_items",
                violation=True,
            )
        items: list[JsonObject] = []
        for index, line in enumerate(line_items):
            param = f"line_items[{index}]"
            if "price" not in line:
                raise StripeApiError(
                    400,
                    f"fake Stripe supports only line items with a `price` ({param})",
                    param=param,
                    violation=True,
                )
            price = self._get("price", line["price"], param=f"{param}[price]")
            if not price["active"]:
                raise StripeApiError(
                    400,
                    "The price specified is inactive. This field only accepts active prices.",
                    param=f"{param}[price]",
                )
            if "quantity" not in line:
                raise StripeApiError(
                    400,
                    f"Quantity is required. Add `quantity` to `{param}`.",
                    param=f"{param}[quantity]",
                    violation=True,
                )
            if mode == "payment" and price["type"] == "recurring":
                raise StripeApiError(
                    400,
                    "You specified `payment` mode but passed a recurring price. Either switch "
                    "to `subscription` mode or use only one-time prices.",
                    param=f"{param}[price]",
                    violation=True,
                )
            if items and price["currency"] != items[0]["currency"]:
                raise StripeApiError(
                    400,
                    "All prices on a Checkout Session must share one currency.",
                    param=f"{param}[price]",
                    violation=True,
                )
            quantity = int(line["quantity"])
            amount = int(price["unit_amount"] or 0) * quantity
            product = self._objects.get(price["product"], {})
            items.append(
                {
                    "id": new_id("li_1"),
                    "object": "item",
                    "amount_discount": 0,
                    "amount_subtotal": amount,
                    "amount_tax": 0,
                    "amount_total": amount,
                    "currency": price["currency"],
                    "description": product.get("name"),
                    "metadata": {},
                    "price": copy.deepcopy(price),
                    "quantity": quantity,
                }
            )
        if mode == "subscription" and not any(i["price"]["type"] == "recurring" for i in items):
            raise StripeApiError(
                400,
                "You must provide at least one recurring price in `subscription` mode when "
                "using prices.",
                param="line_items",
                violation=True,
            )
        return items

    def _respond_session(self, session: JsonObject, params: Mapping[str, Any]) -> JsonObject:
        expand = list(params.get("expand", []))
        if "line_items" not in expand:
            return self._expanded(session, expand)
        expand.remove("line_items")
        result = self._expanded(session, expand)
        items = copy.deepcopy(self._line_items.get(session["id"], []))
        result["line_items"] = {
            "object": "list",
            "data": items,
            "has_more": False,
            "url": f"/v1/checkout/sessions/{session['id']}/line_items",
        }
        return result

    def _retrieve_checkout_session(self, params: JsonObject, path: Mapping[str, str]) -> JsonObject:
        return self._respond_session(self._get("checkout.session", path["session"]), params)

    def _list_line_items(self, params: JsonObject, path: Mapping[str, str]) -> JsonObject:
        session = self._get("checkout.session", path["session"])
        items = self._line_items.get(session["id"], [])
        limit = params.get("limit", DEFAULT_LIMIT)
        after = params.get("starting_after")
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else 0
        page = items[start : start + limit]
        return {
            "object": "list",
            "data": copy.deepcopy(page),
            "has_more": start + limit < len(items),
            "url": f"/v1/checkout/sessions/{session['id']}/line_items",
        }

    # ------------------------------------------------------------------ billing portal

    def _create_portal_session(self, params: JsonObject, _: Mapping[str, str]) -> JsonObject:
        self._note_ignored(
            "POST /v1/billing_portal/sessions", params, {"customer", "return_url", "locale"}
        )
        if "customer" not in params:
            raise StripeApiError(
                400, "Missing required param: customer.", param="customer", violation=True
            )
        customer = self._get("customer", params["customer"], param="customer")
        portal: JsonObject = {
            "id": new_id("bps_1"),
            "object": "billing_portal.session",
            "configuration": new_id("bpc_1"),
            "created": self._now(),
            "customer": customer["id"],
            "flow": None,
            "livemode": False,
            "locale": params.get("locale"),
            "on_behalf_of": None,
            "return_url": params.get("return_url"),
            "url": f"https://billing.stripe.com/p/session/test_{new_id('', 40)}",
        }
        self._store(portal)
        return self._respond(portal, params)

    # ------------------------------------------------------------------ events

    def _list_events(self, params: JsonObject, _: Mapping[str, str]) -> JsonObject:
        self._note_ignored(
            "GET /v1/events",
            params,
            {"type", "types", "created", "limit", "starting_after", "ending_before"},
        )
        items = [o for o in self._objects.values() if o.get("object") == "event"]
        if "type" in params:
            pattern = re.compile(
                ".*".join(re.escape(part) for part in str(params["type"]).split("*"))
            )
            items = [o for o in items if pattern.fullmatch(str(o.get("type")))]
        if "types" in params:
            items = [o for o in items if o.get("type") in params["types"]]
        return self._page(items, params, "/v1/events")

    def _retrieve_event(self, params: JsonObject, path: Mapping[str, str]) -> JsonObject:
        return self._respond(self._get("event", path["id"]), params)

    # ------------------------------------------------------------------ subscriptions

    def _list_subscriptions(self, params: JsonObject, _: Mapping[str, str]) -> JsonObject:
        self._note_ignored(
            "GET /v1/subscriptions",
            params,
            {"status", "customer", "price", "created", "limit", "starting_after", "ending_before"},
        )
        items = [o for o in self._objects.values() if o.get("object") == "subscription"]
        status = params.get("status")
        if status is None:
            items = [o for o in items if o.get("status") != "canceled"]
        elif status == "ended":
            items = [o for o in items if o.get("status") in ("canceled", "incomplete_expired")]
        elif status != "all":
            items = [o for o in items if o.get("status") == status]
        if "customer" in params:
            items = [o for o in items if _id_of(o.get("customer")) == params["customer"]]
        if "price" in params:
            items = [
                o
                for o in items
                if any(
                    _id_of(item.get("price")) == params["price"]
                    for item in o.get("items", {}).get("data", [])
                )
            ]
        return self._page(items, params, "/v1/subscriptions")

    def _retrieve_subscription(self, params: JsonObject, path: Mapping[str, str]) -> JsonObject:
        return self._respond(self._get("subscription", path["subscription_exposed_id"]), params)


def _id_of(value: Any) -> str | None:
    """The id of an expandable field, whether it holds an id or the object."""
    if isinstance(value, dict):
        found = value.get("id")
        return found if isinstance(found, str) else None
    return value if isinstance(value, str) else None
