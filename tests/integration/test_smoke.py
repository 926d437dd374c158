"""The shortest path through the service on both databases."""

from creditline import CreditlineClient
from creditline.v1 import grant_pb2


def test_grant_then_spend(client: CreditlineClient) -> None:
    client.create_account("acme")
    client.grant_credits("acme", "10", source=grant_pb2.GRANT_SOURCE_PURCHASE)
    spent = client.spend_credits("acme", "2.5")
    assert spent.available == "7.5"
    assert client.get_balance("acme").balance.balance == "7.5"
