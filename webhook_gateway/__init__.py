"""The Stripe webhook gateway: verify → translate → apply through the Creditline client → answer.

It holds no database: every verified event Creditline acts on becomes one ApplyStripeEvent call
whose idempotency key is "stripe:" + the event id, so a redelivered event is a replay and the
gateway can be restarted, or run as many replicas, at any time. Modules:

- settings   GatewaySettings, read once from the environment into a frozen object.
- verify     the Stripe-Signature check on the raw body (several secrets, for rotation).
- translate  Stripe event JSON → creditline.v1.StripeEvent; pure, no I/O.
- app        the aiohttp application (POST /stripe/webhook, GET /healthz) and `creditline gateway`.
- reconcile  `creditline stripe reconcile`: replays Stripe's event list and reports drift.

It imports the `creditline` client package, never the server's.
"""
