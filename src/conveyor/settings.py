"""Typed settings: explicit arguments first, then ``CONVEYOR_*`` variables, then defaults."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import ConfigurationError

DEFAULT_URL = "sqlite:///./conveyor.db"
ENV_PREFIX = "CONVEYOR_"


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected 0/1/true/false, got {raw!r}")


def _parse_tokens(raw: str) -> tuple[str, ...]:
    return tuple(token.strip() for token in raw.split(",") if token.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a Conveyor process can be configured with.

    Durations are float seconds. Build one with :meth:`from_env` to read the environment.
    """

    url: str = DEFAULT_URL
    lease_seconds: float = 30.0
    shutdown_grace_seconds: float = 30.0
    result_ttl_seconds: float = 86_400.0
    event_retention_seconds: float = 3_600.0
    idempotency_ttl_seconds: float = 86_400.0
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = 1_048_576
    max_result_bytes: int = 1_048_576
    webhook_allow_private: bool = False
    webhook_max_attempts: int = 8
    webhook_timeout_seconds: float = 10.0
    webhook_concurrency: int = 16
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allow_insecure_no_auth: bool = False
    events_poll_seconds: float = 0.05

    def __post_init__(self) -> None:
        for name in (
            "lease_seconds",
            "shutdown_grace_seconds",
            "result_ttl_seconds",
            "event_retention_seconds",
            "idempotency_ttl_seconds",
            "webhook_max_attempts",
            "webhook_timeout_seconds",
            "webhook_concurrency",
            "events_poll_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{ENV_PREFIX}{name.upper()} must be positive")
        for name in ("max_body_bytes", "max_result_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{ENV_PREFIX}{name.upper()} must be positive")
        if not self.url:
            raise ConfigurationError(f"{ENV_PREFIX}URL must not be empty")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``overrides`` (when not ``None``), then the environment.

        Args:
            environ: the variables to read; ``os.environ`` when omitted.
            **overrides: explicit values, e.g. from command-line options.

        Raises:
            ConfigurationError: a variable holds a value of the wrong kind; the message
                names the variable.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            explicit = overrides.pop(f.name, None)
            if explicit is not None:
                values[f.name] = explicit
                continue
            key = ENV_PREFIX + f.name.upper()
            raw = env.get(key)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _convert(f.type, raw)
            except ValueError as exc:
                raise ConfigurationError(f"{key}: {exc}") from None
        if overrides:
            raise ConfigurationError(f"unknown settings: {', '.join(sorted(overrides))}")
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _convert(type_name: object, raw: str) -> Any:
    # Annotations are strings under `from __future__ import annotations`.
    match type_name:
        case "float":
            return float(raw)
        case "int":
            return int(raw)
        case "bool":
            return _parse_bool(raw)
        case "tuple[str, ...]":
            return _parse_tokens(raw)
        case _:
            return raw
