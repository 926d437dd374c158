"""The only place that speaks Stripe's wire format outbound: the configured client and the
StripePort adapter (client.py), the translation of Stripe's errors into domain errors
(errors.py), and the catalog sync that pushes packages and plans to Stripe and pulls them back
(catalog_sync.py)."""
