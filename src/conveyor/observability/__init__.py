"""Observability: structured logs (and, as they land, metrics and tracing hooks)."""
