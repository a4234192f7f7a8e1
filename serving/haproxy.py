"""HAProxy in front of a replica set: typed settings -> one generated `haproxy.cfg` (never hand-edited).

What the generated configuration does (HAProxy 2.6, the Debian package; directives from its configuration
manual, docs/replicas.md explains the choices):
- two frontends, HTTP/1.1 and gRPC (HTTP/2; cleartext `proto h2`, or TLS with ALPN `h2`), each balancing
  **every request** round-robin over the replicas (a layer-4 balancer would pin a long-lived HTTP/2
  connection, with all its requests, to one replica);
- readiness health checks: `GET /v2/health/ready` on each replica's HTTP port (the gRPC servers are checked
  through the same HTTP port, `check port ... check-proto h1`);
- retries: `retry-on` connection failures and empty/junk responses, `option redispatch` to another replica;
- admission control: at most `maxconn_per_replica` requests in flight per replica; a request that finds every
  replica full waits at most `queue_timeout_ms` in HAProxy's queue, then gets 503 (gRPC clients map it to
  UNAVAILABLE) at once, instead of queueing without bound inside Triton;
- the edge: TLS termination (`tls_certificate`, a PEM holding the certificate and its key) and an optional
  API key (header `x-api-key`) checked on every request except the health endpoints. The key itself never
  enters the file: HAProxy reads it from the environment variable `API_KEY_ENV`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, SecretStr, field_validator

from attnserve.defaults import GRPC_PORT, HTTP_PORT
from attnserve.errors import ServerError, UserInputError
from attnserve.security import API_KEY_HEADER, DEFAULT_BIND_ADDRESS

HAPROXY_PACKAGE = "haproxy"
"""The Debian package that provides the binary (`apt-get install haproxy`)."""


API_KEY_ENV = "ATTNSERVE_EDGE_API_KEY"
"""Environment variable HAProxy reads the API key from (the generated file holds only its name)."""

HEALTH_PATH = "/v2/health/ready"
"""Triton's readiness endpoint: HAProxy's health check and the path left open without the API key."""

SYSTEM_BINARIES = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
"""Where Debian puts the binary (/usr/sbin is not on every user's PATH)."""

_SERVER_CLOSED = ("conn-failure", "empty-response", "junk-response", "0rtt-rejected")
"""`retry-on` events: the replica failed before answering (a killed process); the request is sent again."""


API_KEY_MIN_LENGTH = 16
"""Shortest edge API key accepted: a short key is a guessable one."""

_API_KEY_FORBIDDEN = "\"'\\$"
"""Characters HAProxy's configuration would have to escape (the key is read from its environment)."""


def api_key_problem(key: str) -> str | None:
    """What is wrong with an edge API key, in words that never repeat the key; None when it is acceptable."""
    rule = f"expected at least {API_KEY_MIN_LENGTH} characters without spaces, quotes, '\\' or '$'"
    if len(key) < API_KEY_MIN_LENGTH:
        return f"{rule}, got {len(key)} characters"
    if any(c.isspace() or c in _API_KEY_FORBIDDEN for c in key):
        return f"{rule}, got a key holding one of those"
    return None


class EdgeSettings(BaseModel):
    """The load balancer's settings (ports 0 = pick free ones)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = DEFAULT_BIND_ADDRESS
    http_port: int = Field(HTTP_PORT, ge=0, le=65535)
    grpc_port: int = Field(GRPC_PORT, ge=0, le=65535)
    maxconn_per_replica: PositiveInt = 4
    """Requests one replica gets at once; more wait in HAProxy's queue (Triton batches what it gets)."""
    queue_timeout_ms: PositiveInt = 10
    """Longest wait in HAProxy's queue for a free replica slot; then 503 / UNAVAILABLE."""
    connect_timeout_ms: PositiveInt = 500
    server_timeout_s: PositiveInt = 60
    """Longest time a replica may take to answer one request."""
    client_timeout_s: PositiveInt = 120
    """Longest idle time of a client connection."""
    retries: int = Field(3, ge=0, le=10)
    """Extra attempts after a connection failure or an empty answer (on another replica: redispatch)."""
    check_interval_ms: PositiveInt = 500
    """Health-check period per replica (a dead replica leaves the rotation after `check_fall` failures)."""
    check_fall: PositiveInt = 1
    check_rise: PositiveInt = 1
    buffer_kb: int = Field(64, ge=16, le=4096)
    """HAProxy's buffer (`tune.bufsize`): a whole request must fit to be retried on another replica, and with
    HAProxy 2.6 a queued HTTP/2 request larger than it stalls the other streams of its connection; but HAProxy's
    CPU per request grows with it (bench.replicas: ~130 us at 64 KiB, ~670 us at 256 KiB). Raise it for inputs
    above ~60 KiB (a 224x224 RGB uint8 image is 147 KiB: 256)."""
    max_connections: int = Field(1024, ge=16, le=100_000)
    """Client connections HAProxy accepts at once (global `maxconn`; memory: up to 2 buffers each)."""
    threads: int | None = Field(None, ge=1, le=64)
    """HAProxy's worker threads (`nbthread`); None = one per CPU (HAProxy's default)."""
    access_log: bool = False
    """One log line per request (HAProxy's httplog: queue wait, connect, response times) in haproxy.log."""
    tls_certificate: Path | None = None
    """PEM file holding the certificate chain and the private key; None = cleartext."""
    api_key: SecretStr | None = None
    """Required in the `x-api-key` header of every request (health endpoints excepted); None = open."""

    @field_validator("api_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        problem = api_key_problem(value.get_secret_value()) if value is not None else None
        if problem is not None:
            raise ValueError(f"api_key: {problem}")
        return value

    @property
    def tls(self) -> bool:
        return self.tls_certificate is not None


@dataclass(frozen=True)
class ReplicaPorts:
    """Where one replica listens (on 127.0.0.1)."""

    name: str
    http_port: int
    grpc_port: int
    metrics_port: int


def haproxy_binary() -> str:
    """Path of the `haproxy` binary.

    Raises:
        ServerError: not installed; the message names the Debian package.
    """
    found = shutil.which("haproxy") or next((p for p in SYSTEM_BINARIES if Path(p).is_file()), None)
    if found is None:
        raise ServerError(
            f"the replica set needs HAProxy in front of the replicas: install the Debian package "
            f"`{HAPROXY_PACKAGE}` (apt-get install -y {HAPROXY_PACKAGE}); no `haproxy` binary on PATH or in /usr/sbin"
        )
    return found


def _bind_line(settings: EdgeSettings, port: int, alpn: str, cleartext_proto: str) -> str:
    if settings.tls_certificate is None:
        return f"    bind {settings.host}:{port}{cleartext_proto}"
    certificate = Path(settings.tls_certificate).resolve()
    if not certificate.is_file():
        raise UserInputError(f"TLS certificate {certificate} not found (expected a PEM with certificate and key)")
    return f"    bind {settings.host}:{port} ssl crt {certificate} alpn {alpn}"


_GRPC_HEALTH = "/inference.GRPCInferenceService"
_KEY_REFUSED = f"missing or wrong API key: send it in the {API_KEY_HEADER} header"


def _edge_rules(settings: EdgeSettings, grpc: bool) -> list[str]:
    """API-key check of `settings` (none when it sets no key); see `_key_rules`."""
    return _key_rules(grpc) if settings.api_key is not None else []


def _key_rules(grpc: bool) -> list[str]:
    """API-key check (health paths stay open: probes and load balancers carry no key).

    HTTP gets 401 with Triton's JSON error shape (tritonclient shows the message as it is); gRPC gets a
    trailers-only answer with status 16 UNAUTHENTICATED and the same message (grpc-status / grpc-message).
    """
    if grpc:
        answer = (
            "    http-request return status 200 content-type application/grpc hdr grpc-status 16 "
            f'hdr grpc-message "{_KEY_REFUSED}" if !key_ok !health'
        )
    else:
        answer = (
            '    http-request return status 401 content-type application/json string "{\\"error\\":'
            f'\\"{_KEY_REFUSED}\\"}}" hdr www-authenticate ApiKey if !key_ok !health'
        )
    return [
        f'    acl key_ok req.hdr({API_KEY_HEADER}) -m str -- "${{{API_KEY_ENV}}}"',
        f"    acl health path_beg /v2/health/ {_GRPC_HEALTH}/ServerLive {_GRPC_HEALTH}/ServerReady",
        answer,
    ]


def _global_and_defaults(settings: EdgeSettings) -> list[str]:
    """`global` + `defaults`: buffers, timeouts (queue = admission control), retries, per-replica limit."""
    return [
        "global",
        f"    maxconn {settings.max_connections}",
        f"    tune.bufsize {settings.buffer_kb * 1024}",
        *([f"    nbthread {settings.threads}"] if settings.threads else []),
        "    ssl-default-bind-options ssl-min-ver TLSv1.2",
        *(["    log stdout format raw local0 info"] if settings.access_log else []),
        "",
        "defaults",
        "    mode http",
        "    log global",
        *(["    option httplog"] if settings.access_log else []),
        f"    timeout connect {settings.connect_timeout_ms}ms",
        f"    timeout client {settings.client_timeout_s}s",
        f"    timeout server {settings.server_timeout_s}s",
        f"    timeout queue {settings.queue_timeout_ms}ms",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 60s",
        f"    retries {settings.retries}",
        f"    retry-on {' '.join(_SERVER_CLOSED)}",
        "    option redispatch 1",
        "    option http-buffer-request",
        (
            f"    default-server inter {settings.check_interval_ms}ms fastinter {settings.check_interval_ms}ms "
            f"downinter {settings.check_interval_ms}ms fall {settings.check_fall} rise {settings.check_rise} "
            f"maxconn {settings.maxconn_per_replica}"
        ),
    ]


def _backend(name: str, servers: list[str]) -> list[str]:
    """Round-robin per request over `servers`, each checked on Triton's readiness endpoint."""
    return [
        f"backend {name}",
        "    balance roundrobin",
        "    option httpchk",
        f"    http-check send meth GET uri {HEALTH_PATH}",
        "    http-check expect status 200",
        *servers,
    ]


def haproxy_config(settings: EdgeSettings, replicas: list[ReplicaPorts], http_port: int, grpc_port: int) -> str:
    """The whole `haproxy.cfg` for `replicas` behind the edge on `http_port` / `grpc_port`.

    Args:
        settings: the typed edge settings.
        replicas: each replica's ports (on 127.0.0.1).
        http_port: the edge's HTTP port (already resolved; settings may say 0).
        grpc_port: the edge's gRPC port.
    """
    if not replicas:
        raise UserInputError("a replica set needs at least one replica")
    http_servers = [f"    server {r.name} 127.0.0.1:{r.http_port} check" for r in replicas]
    # gRPC servers speak HTTP/2 in clear text; their health is Triton's readiness on the same replica's HTTP port
    grpc_servers = [
        f"    server {r.name} 127.0.0.1:{r.grpc_port} proto h2 check port {r.http_port} check-proto h1"
        for r in replicas
    ]
    lines = [
        "# generated by attnserve.serving.haproxy.haproxy_config; do not edit (regenerated on every start)",
        *_global_and_defaults(settings),
        "",
        "frontend triton_http",
        _bind_line(settings, http_port, "http/1.1", ""),
        *_edge_rules(settings, grpc=False),
        "    default_backend replicas_http",
        "",
        "frontend triton_grpc",
        _bind_line(settings, grpc_port, "h2", " proto h2"),
        *_edge_rules(settings, grpc=True),
        "    default_backend replicas_grpc",
        "",
        *_backend("replicas_http", http_servers),
        "",
        *_backend("replicas_grpc", grpc_servers),
        "",
    ]
    return "\n".join(lines)


KUBERNETES_DNS_ENV = "ATTNSERVE_REPLICAS_DNS"
"""Environment variable holding the headless Service's DNS name in the chart's edge pod (HAProxy expands it)."""

TLS_CERTIFICATE_ENV = "ATTNSERVE_EDGE_TLS_CERT"
"""In the chart's edge pod: path of the mounted certificate (its key beside it as `<path>.key`); unset = cleartext."""

EDGE_METRICS_PORT = 8404
"""The in-cluster edge's own port: HAProxy's Prometheus exporter on /metrics and a health answer on /healthz."""


def _kubernetes_frontend(name: str, port: int, grpc: bool) -> list[str]:
    """A frontend whose TLS and API key are switched on by the pod's environment.

    HAProxy's conditional blocks (`.if defined(VAR)`, HAProxy >= 2.4) keep one generated file for every chart
    variant: the chart sets `ATTNSERVE_EDGE_TLS_CERT` when a TLS Secret is mounted and `ATTNSERVE_EDGE_API_KEY`
    from the API-key Secret; neither value is ever written into the file.
    """
    alpn, cleartext = ("h2", " proto h2") if grpc else ("http/1.1", "")
    return [
        f"frontend {name}",
        f".if defined({TLS_CERTIFICATE_ENV})",
        f'    bind :{port} ssl crt "${{{TLS_CERTIFICATE_ENV}}}" alpn {alpn}',
        ".else",
        f"    bind :{port}{cleartext}",
        ".endif",
        f".if defined({API_KEY_ENV})",
        *_key_rules(grpc),
        ".endif",
        f"    default_backend replicas_{'grpc' if grpc else 'http'}",
    ]


def kubernetes_edge_config(
    settings: EdgeSettings, max_replicas: int = 16, http_port: int = HTTP_PORT, grpc_port: int = GRPC_PORT
) -> str:
    """The same edge for the Helm chart: replicas found through the headless Service's DNS records.

    `server-template` keeps up to `max_replicas` server slots filled with the pod addresses the cluster DNS
    returns for `${ATTNSERVE_REPLICAS_DNS}` (the chart sets it), re-resolved every few seconds, so pods the HPA
    adds join the rotation. TLS and the API key come from the pod's environment (`_kubernetes_frontend`): the
    chart mounts them from Secrets, so `settings` must not set them. A third frontend on `EDGE_METRICS_PORT`
    serves HAProxy's built-in Prometheus exporter and the probes' `/healthz`.
    """
    if settings.tls or settings.api_key is not None:
        raise UserInputError(
            "the in-cluster edge reads TLS and the API key from Secrets (chart values edge.tls, edge.apiKeySecret): "
            "do not set them in the settings"
        )
    dns = f'"${{{KUBERNETES_DNS_ENV}}}"'
    slots = f"1-{max_replicas}"
    grpc_template = (
        f"    server-template replica {slots} {dns}:{grpc_port} proto h2 check port {http_port} "
        "check-proto h1 resolvers cluster init-addr none"
    )
    lines = [
        "# generated by attnserve.serving.haproxy.kubernetes_edge_config (deploy/kubernetes/sync_values.py); do not edit",
        *_global_and_defaults(settings),
        "",
        "resolvers cluster",
        "    parse-resolv-conf",
        "    hold valid 5s",
        "    accepted_payload_size 8192",
        "",
        *_kubernetes_frontend("triton_http", http_port, grpc=False),
        "",
        *_kubernetes_frontend("triton_grpc", grpc_port, grpc=True),
        "",
        "frontend edge_metrics",
        f"    bind :{EDGE_METRICS_PORT}",
        "    http-request set-log-level silent",  # scrapes and probes stay out of the access log
        "    monitor-uri /healthz",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "",
        *_backend(
            "replicas_http",
            [f"    server-template replica {slots} {dns}:{http_port} check resolvers cluster init-addr none"],
        ),
        "",
        *_backend("replicas_grpc", [grpc_template]),
        "",
    ]
    return "\n".join(lines)
