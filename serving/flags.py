"""The one place that builds `tritonserver`'s command line.

Both the embedded CPU server (`attnserve serve`, `TritonServer`) and the GPU `docker-compose.yml` use
`triton_args`; a test checks that the compose file's command equals `compose_command()`. Flag names are
Triton's own (2.51 / NGC 24.10).

Security defaults applied here:
- every endpoint binds to `DEFAULT_BIND_ADDRESS` (127.0.0.1) unless an address is given; Triton itself
  binds HTTP *and gRPC* to 0.0.0.0 when `--http-address` / `--grpc-address` are left out;
- model control is explicit, with the models to load listed (`--load-model`);
- the API groups in `RESTRICTED_APIS` need the admin token header on HTTP and gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from attnserve.defaults import GRPC_PORT, HTTP_PORT, METRICS_PORT
from attnserve.errors import UserInputError
from attnserve.security import ADMIN_TOKEN_ENV, ADMIN_TOKEN_HEADER, DEFAULT_BIND_ADDRESS, RESTRICTED_APIS

DEFAULT_HTTP_PORT = HTTP_PORT
DEFAULT_GRPC_PORT = GRPC_PORT
DEFAULT_METRICS_PORT = METRICS_PORT
DEFAULT_EXIT_TIMEOUT_S = 30
"""Seconds Triton waits for in-flight requests after SIGTERM before it exits anyway."""

ALL_MODELS = "*"
"""`--load-model=*`: load every model of the repository (explicit mode still forbids later loads without token)."""


@dataclass(frozen=True)
class TritonEndpoints:
    """Where Triton's three endpoints listen: one bind address and three ports (0: `TritonServer` picks a free one)."""

    host: str = DEFAULT_BIND_ADDRESS
    http_port: int = DEFAULT_HTTP_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    metrics_port: int = DEFAULT_METRICS_PORT

    @classmethod
    def any_free(cls, host: str = DEFAULT_BIND_ADDRESS) -> TritonEndpoints:
        """Free ports picked at start-up (tests, benchmarks, several servers on one host)."""
        return cls(host=host, http_port=0, grpc_port=0, metrics_port=0)


# Characters Triton's `<apis>:<key>=<value>` parser splits on; a token holding them would be cut.
_FORBIDDEN_TOKEN_CHARS = frozenset(":=, \t\n")

# Compose-side values: the container's paths and the variable the host's `.env` / environment provides.
COMPOSE_REPOSITORY = "/models"
COMPOSE_TOKEN = "${" + "ATTNSERVE_ADMIN_TOKEN:?set ATTNSERVE_ADMIN_TOKEN (admin token for restricted APIs)}"
KUBERNETES_TOKEN = "$(" + ADMIN_TOKEN_ENV + ")"
"""Kubernetes expands `$(VAR)` in a container's args from its environment (the token comes from a Secret)."""
COMPOSE_ADDRESS = "0.0.0.0"
"""Inside the container Triton must listen on all interfaces; the host side publishes on 127.0.0.1 only."""


def restricted_api_value(admin_token: str, apis: Sequence[str] = RESTRICTED_APIS) -> str:
    """Value of `--http-restricted-api` / `--grpc-restricted-protocol`: `<api>,<api>:<header>=<token>`.

    Args:
        admin_token: the secret the header must carry.
        apis: Triton API groups to restrict.

    Raises:
        UserInputError: the token is empty or holds a character Triton's flag parser splits on.
    """
    if not admin_token:
        raise UserInputError("admin token must be a non-empty string")
    bad = sorted(set(admin_token) & _FORBIDDEN_TOKEN_CHARS)
    # compose fills in `${VAR}`, Kubernetes fills in `$(VAR)` from the container's environment
    is_variable_reference = (admin_token.startswith("${") and admin_token.endswith("}")) or (
        admin_token.startswith("$(") and admin_token.endswith(")")
    )
    if bad and not is_variable_reference:
        raise UserInputError(f"admin token must not contain any of {bad!r} (Triton splits its flag on them)")
    return f"{','.join(apis)}:{ADMIN_TOKEN_HEADER}={admin_token}"


def triton_args(
    repository: Path | str,
    *,
    models: Sequence[str] | None,
    admin_token: str | None,
    endpoints: TritonEndpoints | None = None,
    backend_directory: Path | str | None = None,
    log_verbose: int = 0,
    exit_timeout_s: int = DEFAULT_EXIT_TIMEOUT_S,
) -> list[str]:
    """Build `tritonserver`'s arguments (without the program name).

    Args:
        repository: the model repository Triton reads.
        models: names to load at start-up (explicit model control); None loads all (`--load-model=*`).
        admin_token: token for the restricted API groups; None leaves them open (not recommended).
        endpoints: the bind address of all three endpoints (given explicitly: Triton's own default is 0.0.0.0)
            and the HTTP/REST, gRPC and Prometheus metrics ports (default: `TritonEndpoints()`, loopback).
        backend_directory: where the backends live (the embedded server's copy); None = Triton's default.
        log_verbose: Triton's verbose log level (0 = off).
        exit_timeout_s: seconds to let in-flight requests finish on SIGTERM.

    Returns:
        The argument list, one `--flag=value` string per item.

    Raises:
        UserInputError: an empty model list, a port out of range, or an unusable token.
    """
    endpoints = endpoints or TritonEndpoints()
    ports = {"http": endpoints.http_port, "grpc": endpoints.grpc_port, "metrics": endpoints.metrics_port}
    for endpoint, port in ports.items():
        if not 1 <= port <= 65535:
            raise UserInputError(f"--{endpoint}-port must be in 1..65535, got {port}")
    if len(set(ports.values())) != len(ports):
        raise UserInputError(f"HTTP, gRPC and metrics ports must differ, got {ports}")
    if models is not None and not models:
        raise UserInputError("no models to load: expected at least one model name (or None for all)")

    args = [f"--model-repository={repository}"]
    if backend_directory is not None:
        args.append(f"--backend-directory={backend_directory}")
    args += [
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in (models if models is not None else [ALL_MODELS])),
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--exit-timeout-secs={exit_timeout_s}",
        f"--http-address={endpoints.host}",
        f"--http-port={endpoints.http_port}",
        f"--grpc-address={endpoints.host}",
        f"--grpc-port={endpoints.grpc_port}",
        "--allow-metrics=true",
        f"--metrics-address={endpoints.host}",
        f"--metrics-port={endpoints.metrics_port}",
        f"--log-verbose={log_verbose}",
    ]
    if admin_token is not None:
        restricted = restricted_api_value(admin_token)
        args += [f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}"]
    return args


def compose_command() -> list[str]:
    """The `command:` of the `triton` service in `docker-compose.yml` (the container's paths and env token).

    The compose file's models come from the build service's export, so every model of the repository is
    loaded (`--load-model=*`); the token is `${ATTNSERVE_ADMIN_TOKEN}` and compose refuses to start without it.
    """
    return [
        "tritonserver",
        *triton_args(
            COMPOSE_REPOSITORY,
            models=None,
            admin_token=COMPOSE_TOKEN,
            endpoints=TritonEndpoints(host=COMPOSE_ADDRESS),
        ),
    ]


def kubernetes_args(repository: str = COMPOSE_REPOSITORY) -> list[str]:
    """The Triton container's `args` in the Helm chart (`deploy/kubernetes/attnserve/values.yaml`, `triton.args`).

    The same flags as the compose file: every model of the repository, restricted APIs behind the admin token
    (`$(ATTNSERVE_ADMIN_TOKEN)`, set from a Secret), all interfaces inside the pod (a Service exposes them).
    `repository` may be a path in the pod or an object-storage URI (`s3://...`, `gs://...`), which Triton reads.
    """
    return triton_args(
        repository,
        models=None,
        admin_token=KUBERNETES_TOKEN,
        endpoints=TritonEndpoints(host=COMPOSE_ADDRESS),
    )


KSERVE_REPOSITORY = "/mnt/models"
"""Where KServe's storage initializer puts the InferenceService's `storageUri`."""
KSERVE_HTTP_PORT = 8080
KSERVE_GRPC_PORT = 9000
"""The ports KServe's own `kserve-tritonserver` ClusterServingRuntime gives Triton (its router expects them)."""


def kserve_args() -> list[str]:
    """The Triton container's `args` in the chart's KServe ServingRuntime (`kserve.args` in values.yaml).

    `kubernetes_args` with KServe's repository path and ports.
    """
    return triton_args(
        KSERVE_REPOSITORY,
        models=None,
        admin_token=KUBERNETES_TOKEN,
        endpoints=TritonEndpoints(host=COMPOSE_ADDRESS, http_port=KSERVE_HTTP_PORT, grpc_port=KSERVE_GRPC_PORT),
    )
