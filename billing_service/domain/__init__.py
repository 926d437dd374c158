"""Pure domain logic: amounts, buckets, holds and ledger rules. No gRPC, database or Stripe."""
