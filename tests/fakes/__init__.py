"""Test doubles for external services: a local fake Stripe HTTP server, checked against Stripe's
OpenAPI description, and builders for Stripe webhook events."""
