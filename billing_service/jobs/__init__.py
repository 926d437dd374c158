"""Background jobs that run inside `serve` or alone under `creditline worker`."""
