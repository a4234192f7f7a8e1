"""Security defaults shared by the server launcher, the compose file and the clients.

Triton restricts API groups behind a header: `--http-restricted-api=<apis>:<header>=<value>` and
`--grpc-restricted-protocol=<apis>:<header>=<value>` (Triton >= 2.41). The value is the admin token,
read from the environment (`ATTNSERVE_ADMIN_TOKEN`), never hard-coded.
"""

from __future__ import annotations

DEFAULT_BIND_ADDRESS = "127.0.0.1"
"""Servers bind to loopback unless told otherwise."""

ADMIN_TOKEN_ENV = "ATTNSERVE_ADMIN_TOKEN"
"""Environment variable holding the admin token for restricted APIs."""

ADMIN_TOKEN_HEADER = "attnserve-admin-token"
"""Header (HTTP) / metadata key (gRPC) that must carry the admin token."""

RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
"""Triton API groups that need the admin token (model control, shared memory, tracing, log settings)."""

GRPC_ADMIN_TOKEN_HEADER = "triton-grpc-protocol-" + ADMIN_TOKEN_HEADER
"""gRPC metadata key Triton checks for restricted protocols (Triton prefixes the configured key)."""

API_KEY_HEADER = "x-api-key"
"""Header (HTTP) / metadata key (gRPC) carrying the edge API key the replica set's HAProxy checks."""
