"""GatewaySettings: the variables it reads, its defaults, and errors that name but never show."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from tests.gateway.shapes import OTHER_SECRET, SECRET
from webhook_gateway.app import create_app
from webhook_gateway.settings import GatewaySettings, SettingError

VARIABLES = (
    "STRIPE_WEBHOOK_SECRET",
    "CREDITLINE_GATEWAY_LISTEN",
    "CREDITLINE_GATEWAY_TARGET",
    "CREDITLINE_GATEWAY_TOKEN",
    "CREDITLINE_GATEWAY_RPC_TIMEOUT_SECONDS",
    "CREDITLINE_GATEWAY_TOLERANCE_SECONDS",
    "STRIPE_SECRET_KEY",
    "STRIPE_API_BASE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LISTEN", raising=False)


def test_defaults() -> None:
    settings = GatewaySettings()

    assert settings.listen == "127.0.0.1:8081"
    assert (settings.host, settings.port) == ("127.0.0.1", 8081)
    assert settings.target == "127.0.0.1:50051"
    assert settings.bearer_token is None
    assert settings.rpc_timeout_seconds == 10
    assert settings.tolerance_seconds == 300
    assert settings.stripe_api_base == "https://api.stripe.com"


def test_every_variable_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "STRIPE_WEBHOOK_SECRET": f"{SECRET},{OTHER_SECRET}",
        "CREDITLINE_GATEWAY_LISTEN": "0.0.0.0:9000",
        "CREDITLINE_GATEWAY_TARGET": "billing:50051",
        "CREDITLINE_GATEWAY_TOKEN": "tok_gateway",
        "CREDITLINE_GATEWAY_RPC_TIMEOUT_SECONDS": "2.5",
        "CREDITLINE_GATEWAY_TOLERANCE_SECONDS": "120",
        "STRIPE_SECRET_KEY": "sk_test_123",
        "STRIPE_API_BASE": "http://127.0.0.1:12111",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LISTEN", "not:read")

    settings = GatewaySettings()

    assert settings.webhook_secrets() == (SECRET, OTHER_SECRET)
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)
    assert settings.target == "billing:50051"
    assert settings.bearer_token == "tok_gateway"
    assert settings.rpc_timeout_seconds == 2.5
    assert settings.tolerance_seconds == 120
    assert settings.stripe_api_key() == "sk_test_123"
    assert settings.stripe_api_base == "http://127.0.0.1:12111"


def test_every_field_is_described_for_the_readme() -> None:
    fields = GatewaySettings.model_fields.values()

    assert sorted(str(f.alias) for f in fields) == sorted(VARIABLES)
    assert all(f.description for f in fields)


def test_secrets_never_show_in_the_settings_repr() -> None:
    settings = GatewaySettings(
        STRIPE_WEBHOOK_SECRET=SecretStr(SECRET),
        STRIPE_SECRET_KEY=SecretStr("sk_test_123"),
        CREDITLINE_GATEWAY_TOKEN=SecretStr("t0k"),
    )

    assert SECRET not in repr(settings)
    assert "sk_test_123" not in repr(settings)
    assert "t0k" not in repr(settings)


@pytest.mark.parametrize("value", ["", " , ", ","])
def test_an_empty_webhook_secret_names_the_variable(value: str) -> None:
    settings = GatewaySettings(STRIPE_WEBHOOK_SECRET=SecretStr(value))

    with pytest.raises(SettingError, match="STRIPE_WEBHOOK_SECRET is empty"):
        settings.webhook_secrets()
    with pytest.raises(SettingError, match="STRIPE_WEBHOOK_SECRET"):
        create_app(settings)


def test_a_secret_key_in_the_webhook_secret_is_refused_without_echoing_it() -> None:
    settings = GatewaySettings(STRIPE_WEBHOOK_SECRET=SecretStr(f"{SECRET},sk_live_oops"))

    with pytest.raises(SettingError, match="STRIPE_WEBHOOK_SECRET") as raised:
        settings.webhook_secrets()

    assert "sk_live_oops" not in str(raised.value)


def test_an_empty_stripe_key_names_the_variable() -> None:
    with pytest.raises(SettingError, match="STRIPE_SECRET_KEY"):
        GatewaySettings().stripe_api_key()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CREDITLINE_GATEWAY_LISTEN", "8081"),
        ("CREDITLINE_GATEWAY_RPC_TIMEOUT_SECONDS", "0"),
        ("CREDITLINE_GATEWAY_TOLERANCE_SECONDS", "-1"),
    ],
)
def test_malformed_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError, match=name):
        GatewaySettings()
