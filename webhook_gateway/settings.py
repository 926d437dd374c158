"""The gateway's settings, read once from the environment into a frozen GatewaySettings.

Stripe's own variables keep Stripe's names (STRIPE_WEBHOOK_SECRET, STRIPE_SECRET_KEY,
STRIPE_API_BASE); the gateway's knobs are CREDITLINE_GATEWAY_*. Every field's description goes
into the README's configuration table. Secrets are SecretStr, so printing the settings never shows
them, and a setting that a command needs but is missing or malformed raises SettingError naming
the variable, never its value.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
"""Every Stripe webhook signing secret starts with this, in the Dashboard and the Stripe CLI."""


class SettingError(ValueError):
    """A setting a command needs is missing or malformed; the message names the variable."""


class GatewaySettings(BaseSettings):
    """Settings of `creditline gateway` and `creditline stripe reconcile`.

    Each field is read from the environment variable named by its alias (and only from that
    one); pass the variable names as keywords to build settings in code, which override the
    environment.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)

    stripe_webhook_secret: SecretStr = Field(
        default=SecretStr(""),
        alias="STRIPE_WEBHOOK_SECRET",
        description=(
            "Stripe webhook signing secret (whsec_…); several comma-separated while rotating. "
            "Required by `gateway`"
        ),
    )
    listen: str = Field(
        default="127.0.0.1:8081",
        alias="CREDITLINE_GATEWAY_LISTEN",
        description="host:port the webhook gateway binds",
    )
    target: str = Field(
        default="127.0.0.1:50051",
        alias="CREDITLINE_GATEWAY_TARGET",
        description="host:port of the Creditline gRPC server the gateway calls",
    )
    token: SecretStr = Field(
        default=SecretStr(""),
        alias="CREDITLINE_GATEWAY_TOKEN",
        description="bearer token with the gateway role; empty sends none (auth off)",
    )
    rpc_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        alias="CREDITLINE_GATEWAY_RPC_TIMEOUT_SECONDS",
        description="deadline of each attempt of an RPC the gateway makes",
    )
    tolerance_seconds: int = Field(
        default=300,
        gt=0,
        alias="CREDITLINE_GATEWAY_TOLERANCE_SECONDS",
        description="oldest Stripe-Signature timestamp accepted, in seconds",
    )
    stripe_secret_key: SecretStr = Field(
        default=SecretStr(""),
        alias="STRIPE_SECRET_KEY",
        description=(
            "Stripe secret or restricted key that may read events and subscriptions. Required "
            "by `stripe reconcile`"
        ),
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com",
        alias="STRIPE_API_BASE",
        description="base URL of the Stripe API; tests point it at a local fake",
    )

    @field_validator("listen")
    @classmethod
    def _has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("must be host:port, e.g. 127.0.0.1:8081")
        return value

    @property
    def host(self) -> str:
        """The host part of listen, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of listen."""
        return int(self.listen.rpartition(":")[2])

    @property
    def bearer_token(self) -> str | None:
        """The token to send, or None to send no authorization metadata."""
        return self.token.get_secret_value() or None

    def webhook_secrets(self) -> tuple[str, ...]:
        """The signing secrets to accept, in the order given.

        Raises SettingError when there is none or one is not a whsec_ secret (a secret API key
        pasted here by mistake, say), naming the variable but never the value.
        """
        secrets = tuple(
            part.strip()
            for part in self.stripe_webhook_secret.get_secret_value().split(",")
            if part.strip()
        )
        if not secrets:
            raise SettingError(
                "STRIPE_WEBHOOK_SECRET is empty: set it to the endpoint's signing secret "
                "(whsec_…), or several comma-separated while rotating"
            )
        if not all(secret.startswith(WEBHOOK_SECRET_PREFIX) for secret in secrets):
            raise SettingError(
                "STRIPE_WEBHOOK_SECRET must hold only webhook signing secrets, each starting "
                f"with {WEBHOOK_SECRET_PREFIX}"
            )
        return secrets

    def stripe_api_key(self) -> str:
        """The Stripe secret key; SettingError naming STRIPE_SECRET_KEY when it is empty."""
        key = self.stripe_secret_key.get_secret_value().strip()
        if not key:
            raise SettingError("STRIPE_SECRET_KEY is empty: set it to a Stripe secret key")
        return key
