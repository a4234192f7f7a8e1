"""Runtime settings of every client: one `BaseSettings`, read from `ATTNSERVE_*` environment variables.

Built once at the entry point (CLI, demo, test) and passed down explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from attnserve.defaults import GRPC_PORT, HTTP_PORT
from attnserve.security import ADMIN_TOKEN_ENV

Protocol = Literal["http", "grpc"]

DEFAULT_PORTS: dict[str, int] = {"http": HTTP_PORT, "grpc": GRPC_PORT}
"""Triton's default ports per protocol (used when a URL has no port)."""


class ClientSettings(BaseSettings):
    """Where the server is and how hard to try.

    Environment variables: `ATTNSERVE_URL`, `ATTNSERVE_PROTOCOL`, `ATTNSERVE_TIMEOUT_S`, ... and the admin token
    from `ATTNSERVE_ADMIN_TOKEN` (only needed for restricted APIs such as shared memory).
    """

    model_config = SettingsConfigDict(env_prefix="ATTNSERVE_", extra="ignore", frozen=True, populate_by_name=True)

    url: str = Field(
        default="", description="host:port of the server; empty = 127.0.0.1 and the protocol's default port"
    )
    protocol: Protocol = "grpc"
    connect_timeout_s: PositiveFloat = 5.0
    timeout_s: PositiveFloat = 30.0
    """Per-request timeout (network + queue + compute)."""
    retries: NonNegativeInt = 3
    """Extra attempts after the first one, only on UNAVAILABLE / connection errors."""
    backoff_s: PositiveFloat = 0.05
    """First backoff; doubles on each retry up to `backoff_max_s`."""
    backoff_max_s: PositiveFloat = 2.0
    retry_budget_s: NonNegativeFloat = 10.0
    """Total time one call may spend retrying (the call stops when either bound is reached)."""
    shared_memory: bool = False
    """Send inputs of at least `shared_memory_min_bytes` through system shared memory (same host only)."""
    shared_memory_min_bytes: NonNegativeInt = 1 << 20
    admin_token: SecretStr | None = Field(default=None, validation_alias=ADMIN_TOKEN_ENV)
    tls: bool = False
    """Speak TLS (https / gRPC over TLS), e.g. to the replica set's HAProxy edge."""
    tls_ca_file: Path | None = None
    """PEM of the certificate authority (or self-signed certificate) to trust; None = the system's store."""
    api_key: SecretStr | None = None
    """Sent in the `x-api-key` header / metadata of every request (`ATTNSERVE_API_KEY`); the edge checks it."""

    @field_validator("tls_ca_file", "api_key", "admin_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `ATTNSERVE_TLS_CA_FILE=` (an emptied variable) means "not set", as it does for a shell; read as a
        # path it would be the current folder.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_backoff(self) -> ClientSettings:
        if self.backoff_max_s < self.backoff_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) must be >= backoff_s ({self.backoff_s})")
        return self._check_tls()

    @property
    def resolved_url(self) -> str:
        """`url` without scheme, with the protocol's default port filled in."""
        url = self.url.strip()
        for scheme in ("http://", "https://", "grpc://"):
            url = url.removeprefix(scheme)
        url = url.rstrip("/")
        if not url:
            return f"127.0.0.1:{DEFAULT_PORTS[self.protocol]}"
        if ":" not in url:
            return f"{url}:{DEFAULT_PORTS[self.protocol]}"
        return url

    def _check_tls(self) -> ClientSettings:
        if self.tls_ca_file is not None and not self.tls:
            raise ValueError("tls_ca_file is set but tls is off: set tls=True (ATTNSERVE_TLS=1) to use it")
        if self.tls_ca_file is not None and not Path(self.tls_ca_file).is_file():
            raise ValueError(f"tls_ca_file {self.tls_ca_file} is not a file (expected a PEM certificate)")
        return self

    def admin_headers(self) -> dict[str, str]:
        """Headers that unlock restricted APIs (empty when no token is configured).

        gRPC uses another key: Triton prefixes the configured header with `triton-grpc-protocol-` there.
        """
        from attnserve.security import ADMIN_TOKEN_HEADER, GRPC_ADMIN_TOKEN_HEADER

        if self.admin_token is None:
            return {}
        key = GRPC_ADMIN_TOKEN_HEADER if self.protocol == "grpc" else ADMIN_TOKEN_HEADER
        return {key: self.admin_token.get_secret_value()}
