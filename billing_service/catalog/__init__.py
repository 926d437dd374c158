"""The catalog of what is sold: the catalog file format, the shipped default catalog
(default_catalog.json), and the commands that load it and sync it with Stripe."""
