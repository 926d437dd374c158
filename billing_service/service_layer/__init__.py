"""Use cases: each owns one transaction, its idempotency record and its validation."""
