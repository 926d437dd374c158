"""Bearer-token authentication and role checks for every creditline.v1 RPC (DESIGN §6).

Tokens are configured as SHA-256 hashes only (CREDITLINE_AUTH_TOKENS), never in plain text;
tokens are 256-bit random strings, so a fast hash is as safe as a slow one here. Health checks
and reflection stay open so load balancers and grpcurl can reach them.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from billing_service.rpc.errors import abort_with, rich_status
from billing_service.rpc.grpc_types import ServerInterceptor

ROLES = frozenset({"admin", "service", "gateway", "reader"})

_PREFIX = "/creditline.v1.CreditService/"
_READS = {
    "GetAccount",
    "ListAccounts",
    "ListGrants",
    "GetReservation",
    "ListReservations",
    "GetBalance",
    "ListLedgerEntries",
}
_SPENDING = {"SpendCredits", "ReserveCredits", "CommitReservation", "ReleaseReservation"}
_BILLING = "/creditline.v1.BillingService/"
_PRICE_READS = {"EstimateCost", "ListPriceBooks", "ListModelPrices", "GetModelPrice", "ListTiers"}
_CATALOG_READS = {"ListPlans", "ListCreditPackages"}
_SELLING = {"CreateCheckoutSession", "CreatePortalSession"}

# The roles, besides admin, that may call each RPC. Admin may call everything; an RPC missing
# here (a new one) is admin-only until it is added.
ALLOWED: Mapping[str, frozenset[str]] = {
    **{_PREFIX + m: frozenset({"service", "reader", "gateway"}) for m in _READS},
    **{_PREFIX + m: frozenset({"service"}) for m in _SPENDING},
    **{_BILLING + m: frozenset({"service", "reader", "gateway"}) for m in _PRICE_READS},
    _BILLING + "ListAccountPriceOverrides": frozenset({"service", "reader"}),
    **{_BILLING + m: frozenset({"service", "reader", "gateway"}) for m in _CATALOG_READS},
    **{_BILLING + m: frozenset({"service"}) for m in _SELLING},
    _BILLING + "GetEntitlements": frozenset({"service", "reader", "gateway"}),
    _BILLING + "ListSubscriptions": frozenset({"service", "reader", "gateway"}),
    # The webhook gateway turns verified Stripe events into this one call.
    _BILLING + "ApplyStripeEvent": frozenset({"gateway"}),
}
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


@dataclass(frozen=True)
class Principal:
    """A configured token holder."""

    name: str
    roles: frozenset[str]


def parse_tokens(spec: str) -> dict[str, Principal]:
    """Parse NAME:ROLE[+ROLE]:SHA256HEX entries, comma-separated, into hash -> principal."""
    table: dict[str, Principal] = {}
    for raw in filter(None, (part.strip() for part in spec.split(","))):
        try:
            name, roles_text, digest = raw.split(":")
        except ValueError:
            raise ValueError(
                f"auth token entry {raw[:20]!r}… is not NAME:ROLES:SHA256HEX"
            ) from None
        roles = frozenset(roles_text.split("+"))
        unknown = roles - ROLES
        if unknown or not name:
            raise ValueError(f"auth token {name!r} has unknown roles {sorted(unknown)}")
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"auth token {name!r} hash must be 64 lowercase hex digits")
        table[digest] = Principal(name, roles)
    return table


def new_token() -> tuple[str, str]:
    """A fresh random token and its SHA-256 hex digest."""
    token = "cl_" + secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest a token is configured by."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_allowed(method: str, roles: frozenset[str]) -> bool:
    """True when a holder of roles may call method."""
    return "admin" in roles or bool(roles & ALLOWED.get(method, frozenset()))


class AuthInterceptor(ServerInterceptor):
    """Refuses calls without a known token (UNAUTHENTICATED) or the right role (DENIED)."""

    def __init__(self, tokens: Mapping[str, Principal]) -> None:
        self._tokens = dict(tokens)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Check the caller before the handler runs."""
        method = handler_call_details.method
        if method.startswith(_OPEN_PREFIXES):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        header = str(metadata.get("authorization", ""))
        scheme, _, token = header.partition(" ")
        principal = (
            self._tokens.get(hash_token(token.strip())) if scheme.lower() == "bearer" else None
        )
        if principal is None:
            return _deny(
                grpc.StatusCode.UNAUTHENTICATED,
                "a valid bearer token is required (metadata authorization: Bearer <token>)",
                "UNAUTHENTICATED",
            )
        if not is_allowed(method, principal.roles):
            return _deny(
                grpc.StatusCode.PERMISSION_DENIED,
                f"token {principal.name!r} with roles {sorted(principal.roles)} may not call "
                f"{method.rsplit('/', 1)[-1]}",
                "PERMISSION_DENIED",
            )
        return await continuation(handler_call_details)


def _deny(code: grpc.StatusCode, message: str, reason: str) -> grpc.RpcMethodHandler[Any, Any]:
    status = rich_status(code, message, reason, {})

    async def refuse(_request: Any, context: Any) -> None:
        await abort_with(context, status)

    return grpc.unary_unary_rpc_method_handler(refuse)
