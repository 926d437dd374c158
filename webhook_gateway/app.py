"""The aiohttp application: POST /stripe/webhook, GET /healthz, and `creditline gateway`.

A webhook is answered with the status that makes Stripe retry exactly when retrying can help:

    body over 1 MiB                                   413
    no, garbled, forged or stale Stripe-Signature     400  {"error": "<reason>"}
    signed body that is not a JSON object             400  {"error": "malformed body"}
    handled type lacking a field (BadPayload)         400  {"error": "bad payload", "detail": …}
    type Creditline does not act on                   200  {"status": "ignored"}
    ApplyStripeEvent succeeded                        200  {"status": "applied"|"ignored"|"stale"}
    ApplyStripeEvent INVALID_ARGUMENT                 400  (a retry would be refused the same way)
    service UNAVAILABLE, DEADLINE_EXCEEDED, no route  503  (Stripe retries)
    any other failure                                 500  (Stripe retries; reconcile catches up)

A 2xx is sent only after the RPC succeeded. The RPC's idempotency key is "stripe:" + the event
id, so Stripe's redeliveries, and deliveries to several gateway replicas, are replays on the
server. Responses carry fixed texts, never exception messages or stack traces; logs carry the
event id, type and outcome (or the error's code and reason), never the secret, the signature
header or the body.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, Protocol

import grpc
from aiohttp import web
from creditline import (
    CreditlineClient,
    CreditlineError,
    DeadlineExceeded,
    InvalidArgument,
    Unavailable,
)
from creditline.v1 import billing_service_pb2, stripe_event_pb2
from pydantic import ValidationError

from webhook_gateway.settings import GatewaySettings, SettingError
from webhook_gateway.translate import BadPayload, translate
from webhook_gateway.verify import SIGNATURE_HEADER, VerificationError, verify

log = logging.getLogger("creditline.gateway")

WEBHOOK_PATH: Final = "/stripe/webhook"
HEALTH_PATH: Final = "/healthz"
MAX_BODY_BYTES: Final = 1 << 20
"""The largest webhook body accepted; Stripe's events are far smaller."""

SHUTDOWN_GRACE_SECONDS: Final = 5.0
"""Added to the RPC timeout to give in-flight webhooks time to finish on shutdown."""

_OUTCOME_PREFIX: Final = "STRIPE_EVENT_OUTCOME_"


class EventSink(Protocol):
    """What the gateway calls: CreditlineClient, or a fake in tests."""

    def apply_stripe_event(
        self,
        event: stripe_event_pb2.StripeEvent,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> billing_service_pb2.ApplyStripeEventResponse:
        """Apply one verified event (BillingService.ApplyStripeEvent)."""
        ...


_CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

SETTINGS_KEY: Final = web.AppKey("settings", GatewaySettings)
SECRETS_KEY: Final = web.AppKey[tuple[str, ...]]("webhook_secrets")
SINK_KEY: Final = web.AppKey[EventSink]("sink")


def create_app(settings: GatewaySettings, client: EventSink | None = None) -> web.Application:
    """The gateway application, calling `client`, or a CreditlineClient it opens and closes.

    Raises SettingError (naming STRIPE_WEBHOOK_SECRET) when no usable signing secret is set, so
    a gateway that could verify nothing never starts.
    """
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS_KEY] = settings
    app[SECRETS_KEY] = settings.webhook_secrets()
    if client is None:
        app.cleanup_ctx.append(_creditline_client)
    else:
        app[SINK_KEY] = client
    app.router.add_post(WEBHOOK_PATH, stripe_webhook)
    app.router.add_get(HEALTH_PATH, healthz)
    return app


async def _creditline_client(app: web.Application) -> AsyncIterator[None]:
    """Open the client to the Creditline server for the app's lifetime.

    Stripe is the one that retries a webhook, so the gateway tries once: a call waits (up to
    the RPC timeout) for a server that is restarting, and a down server is a 503 within that
    time. Reconnect backoff is capped at a second so a recovered server is seen at once.
    """
    settings = app[SETTINGS_KEY]
    channel = grpc.insecure_channel(settings.target, options=_CHANNEL_OPTIONS)
    client = CreditlineClient(
        settings.target,
        token=settings.bearer_token,
        timeout=settings.rpc_timeout_seconds,
        max_attempts=1,
        channel=channel,
        wait_for_ready=True,
    )
    app[SINK_KEY] = client
    yield
    client.close()
    channel.close()


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return web.json_response({"status": "ok"})


async def stripe_webhook(request: web.Request) -> web.Response:  # noqa: PLR0911 - one per answer
    """Verify, translate and apply one Stripe webhook; the status tells Stripe whether to retry."""
    app = request.app
    settings = app[SETTINGS_KEY]
    secrets = app[SECRETS_KEY]
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        log.warning("refused a webhook: body over %d bytes", MAX_BODY_BYTES)
        return _error(413, "body too large")
    try:
        event = verify(
            body,
            request.headers.get(SIGNATURE_HEADER),
            secrets,
            settings.tolerance_seconds,
        )
    except VerificationError as error:
        log.warning("refused a webhook: %s", error.reason, extra={"reason": error.reason})
        return _error(400, error.reason)

    event_id, event_type = _label(event, "id"), _label(event, "type")
    fields = {"event_id": event_id, "event_type": event_type}
    try:
        translated = translate(event)
    except BadPayload as error:
        log.warning("refused event %s (%s): %s", event_id, event_type, error, extra=fields)
        return web.json_response({"error": "bad payload", "detail": str(error)}, status=400)
    if translated is None:
        log.info("ignored event %s (%s): not handled", event_id, event_type, extra=fields)
        return web.json_response({"status": "ignored"})

    try:
        response = await asyncio.to_thread(
            app[SINK_KEY].apply_stripe_event,
            translated,
            idempotency_key=f"stripe:{translated.event_id}",
            timeout=settings.rpc_timeout_seconds,
        )
    except (Unavailable, DeadlineExceeded, ConnectionError) as error:
        _log_failure(logging.WARNING, event_id, event_type, error)
        return _error(503, "service unavailable")
    except InvalidArgument as error:
        _log_failure(logging.ERROR, event_id, event_type, error)
        return _error(400, "event refused by the service")
    except CreditlineError as error:
        _log_failure(logging.ERROR, event_id, event_type, error)
        return _error(500, "internal error")
    except Exception:
        log.exception("applying event %s (%s) failed", event_id, event_type, extra=fields)
        return _error(500, "internal error")
    outcome = outcome_name(response.outcome)
    log.info(
        "event %s (%s): %s", event_id, event_type, outcome, extra={**fields, "outcome": outcome}
    )
    return web.json_response({"status": outcome})


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


def _label(event: dict[str, Any], key: str) -> str:
    """A verified event's id or type for the log, or "?" when it is not a string."""
    value = event.get(key)
    return value if isinstance(value, str) else "?"


def _log_failure(level: int, event_id: str, event_type: str, error: Exception) -> None:
    """Log a failed RPC by its code and reason only: the server's message is not ours to echo."""
    if isinstance(error, CreditlineError):
        code, reason = error.code.name, error.reason
    else:
        code, reason = type(error).__name__, ""
    log.log(
        level,
        "applying event %s (%s) failed: %s %s",
        event_id,
        event_type,
        code,
        reason,
        extra={"event_id": event_id, "event_type": event_type, "code": code, "reason": reason},
    )


def outcome_name(outcome: stripe_event_pb2.StripeEventOutcome.ValueType) -> str:
    """An ApplyStripeEvent outcome as "applied", "ignored", "stale" or "unspecified".

    An outcome this client does not know (from a newer server) is given as its number.
    """
    try:
        name = stripe_event_pb2.StripeEventOutcome.Name(outcome)
    except ValueError:
        return str(int(outcome))
    return name.removeprefix(_OUTCOME_PREFIX).lower()


async def serve(settings: GatewaySettings, client: EventSink | None = None) -> None:
    """Serve the gateway until SIGTERM or SIGINT, then stop gracefully.

    On a signal it stops accepting connections, lets in-flight webhooks finish (up to the RPC
    timeout plus SHUTDOWN_GRACE_SECONDS) and closes the client. Logs "gateway listening on
    host:port" (the bound port, when listen asks for port 0) once connections are accepted.
    """
    app = create_app(settings, client)
    runner = web.AppRunner(
        app, shutdown_timeout=settings.rpc_timeout_seconds + SHUTDOWN_GRACE_SECONDS
    )
    await runner.setup()
    # Handlers first: a signal sent as soon as the listening line appears must still drain.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = runner.addresses[0][1]
        log.info("gateway listening on %s:%d", settings.host, port)
        await stop.wait()
        log.info("gateway stopping")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await runner.cleanup()


def run(settings: GatewaySettings) -> None:
    """Serve the gateway in this process until SIGTERM or SIGINT."""
    asyncio.run(serve(settings))


def gateway_main(argv: Sequence[str] | None = None) -> int:
    """`creditline gateway [--listen HOST:PORT] [--target HOST:PORT]`: run the webhook gateway.

    Returns 2, naming the variable, when the configuration is incomplete or malformed.
    """
    parser = argparse.ArgumentParser(
        prog="creditline gateway", description="Serve the Stripe webhook gateway."
    )
    parser.add_argument("--listen", help="host:port to bind (CREDITLINE_GATEWAY_LISTEN)")
    parser.add_argument(
        "--target", help="host:port of the Creditline server (CREDITLINE_GATEWAY_TARGET)"
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        name: value
        for name, value in (
            ("CREDITLINE_GATEWAY_LISTEN", args.listen),
            ("CREDITLINE_GATEWAY_TARGET", args.target),
        )
        if value
    }
    try:
        settings = GatewaySettings(**overrides)
        settings.webhook_secrets()
    except ValidationError as error:
        print(f"creditline gateway: bad configuration:\n{error}", file=sys.stderr)
        return 2
    except SettingError as error:
        print(f"creditline gateway: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run(settings)
    return 0
