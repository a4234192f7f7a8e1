"""Access: loopback binding, restricted admin APIs (HTTP and gRPC), compose port publishing.

The restricted API groups (`attnserve.security.RESTRICTED_APIS`) must refuse a request without the admin token
header (and with a wrong one) and accept it with the token; inference, health and metadata stay open. The server
process must listen on loopback only, and `docker-compose.yml` must publish its ports on 127.0.0.1 only.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from attnserve.security import ADMIN_TOKEN_HEADER, GRPC_ADMIN_TOKEN_HEADER, RESTRICTED_APIS

from .conftest import ReliabilityServer
from .helpers import descendants, listening_addresses

pytestmark = pytest.mark.triton

REPO_ROOT = Path(__file__).resolve().parents[2]
RESTRICTED_MESSAGE = f"This API is restricted, expecting header '{ADMIN_TOKEN_HEADER}'"
GRPC_RESTRICTED_MESSAGE = f"This protocol is restricted, expecting header '{GRPC_ADMIN_TOKEN_HEADER}'"
"""Triton prefixes the configured key with `triton-grpc-protocol-` on gRPC (it is what Triton does)."""

# One HTTP call per restricted group: (group, method, path). Load/unload are checked separately (they act).
HTTP_RESTRICTED_CALLS = [
    ("model-repository", "POST", "/v2/repository/index"),
    ("shared-memory", "GET", "/v2/systemsharedmemory/status"),
    ("shared-memory", "GET", "/v2/cudasharedmemory/status"),
    ("trace", "GET", "/v2/trace/setting"),
    ("logging", "GET", "/v2/logging"),
]
HTTP_OPEN_CALLS = [("GET", "/v2/health/ready"), ("GET", "/v2/models/rel_light"), ("GET", "/v2/models/rel_light/config")]


def _http(
    url: str, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://{url}{path}",
        method=method,
        headers=headers or {},
        data=body if body is not None else (b"" if method == "POST" else None),
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback test server
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def test_restricted_groups_cover_the_security_constant() -> None:
    assert {group for group, _, _ in HTTP_RESTRICTED_CALLS} == set(RESTRICTED_APIS)


@pytest.mark.parametrize(("group", "method", "path"), HTTP_RESTRICTED_CALLS, ids=lambda v: str(v))
def test_http_restricted_api_needs_token(
    reliability_server: ReliabilityServer, group: str, method: str, path: str
) -> None:
    url = reliability_server.http_url
    status, body = _http(url, method, path)
    assert status == 403, f"{group} {path} without token: expected 403, got {status} {body}"
    assert RESTRICTED_MESSAGE in body
    status, body = _http(url, method, path, {ADMIN_TOKEN_HEADER: "wrong-token"})
    assert status == 403, f"{group} {path} with a wrong token: expected 403, got {status} {body}"
    status, body = _http(url, method, path, reliability_server.admin_headers)
    assert status == 200, f"{group} {path} with the token: expected 200, got {status} {body}"
    json.loads(body)  # a real answer, not an error page


def test_http_model_control_needs_token(reliability_server: ReliabilityServer) -> None:
    """Unload/load without the token are refused and the model keeps serving; with it, the index answers."""
    url = reliability_server.http_url
    for action in ("unload", "load"):
        status, body = _http(url, "POST", f"/v2/repository/models/rel_light/{action}")
        assert (status, RESTRICTED_MESSAGE in body) == (403, True), f"{action}: {status} {body}"
    assert _http(url, "GET", "/v2/models/rel_light/ready")[0] == 200
    status, body = _http(url, "POST", "/v2/repository/index", reliability_server.admin_headers)
    states = {entry["name"]: entry.get("state") for entry in json.loads(body)}
    assert status == 200 and states["rel_light"] == "READY" and states["rel_heavy"] == "READY"
    assert "rel_broken" in states and states["rel_broken"] != "READY"


@pytest.mark.parametrize(("method", "path"), HTTP_OPEN_CALLS)
def test_http_open_apis_need_no_token(reliability_server: ReliabilityServer, method: str, path: str) -> None:
    status, body = _http(reliability_server.http_url, method, path)
    assert status == 200, f"{path}: {status} {body}"


GRPC_RESTRICTED_CALLS: list[tuple[str, Callable[[grpcclient.InferenceServerClient, dict[str, str]], Any]]] = [
    ("model-repository", lambda c, h: c.get_model_repository_index(headers=h)),
    ("model-repository", lambda c, h: c.unload_model("rel_broken", headers=h)),
    ("shared-memory", lambda c, h: c.get_system_shared_memory_status(headers=h)),
    ("shared-memory", lambda c, h: c.get_cuda_shared_memory_status(headers=h)),
    ("trace", lambda c, h: c.get_trace_settings(headers=h)),
    ("logging", lambda c, h: c.get_log_settings(headers=h)),
]


@pytest.mark.parametrize(
    ("group", "call"), GRPC_RESTRICTED_CALLS, ids=[f"{g}-{i}" for i, (g, _) in enumerate(GRPC_RESTRICTED_CALLS)]
)
def test_grpc_restricted_api_needs_token(
    reliability_server: ReliabilityServer,
    group: str,
    call: Callable[[grpcclient.InferenceServerClient, dict[str, str]], Any],
) -> None:
    client = grpcclient.InferenceServerClient(reliability_server.grpc_url)
    try:
        token = reliability_server.server.admin_token  # type: ignore[attr-defined]
        # no token, a wrong token, and the right token under the HTTP header name (not what gRPC checks)
        for headers in ({}, {GRPC_ADMIN_TOKEN_HEADER: "wrong-token"}, {ADMIN_TOKEN_HEADER: token}):
            with pytest.raises(InferenceServerException) as refused:
                call(client, headers)
            assert refused.value.status() == "StatusCode.UNAVAILABLE", refused.value
            assert GRPC_RESTRICTED_MESSAGE in refused.value.message(), refused.value.message()
        call(client, {GRPC_ADMIN_TOKEN_HEADER: token})  # accepted: no exception
    finally:
        client.close()


def test_grpc_inference_needs_no_token(reliability_server: ReliabilityServer) -> None:
    client = grpcclient.InferenceServerClient(reliability_server.grpc_url)
    try:
        pixels = np.arange(2 * 3 * 8 * 8, dtype=np.uint8).reshape(2, 3, 8, 8)
        tensor = grpcclient.InferInput("pixels", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels)
        logits = client.infer("rel_light", [tensor]).as_numpy("logits")
        np.testing.assert_allclose(logits, reliability_server.reference("rel_light", pixels), rtol=1e-5, atol=1e-5)
        assert client.is_model_ready("rel_light")
    finally:
        client.close()


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def test_server_listens_on_loopback_only(reliability_server: ReliabilityServer) -> None:
    """Every listening socket of tritonserver (and of its stubs) is on a loopback address."""
    server = reliability_server.server
    listening = listening_addresses(server.pid)  # type: ignore[attr-defined]
    ports = {port for _, port in listening}
    expected_ports = {server.http_port, server.grpc_port, server.metrics_port}  # type: ignore[attr-defined]
    assert expected_ports <= ports, f"expected listeners on {expected_ports}, found {sorted(listening)}"
    exposed = sorted(item for item in listening if not _is_loopback(item[0]))
    assert not exposed, f"tritonserver listens beyond loopback: {exposed}"
    for child in descendants(server.pid):  # type: ignore[attr-defined]
        child_listening = listening_addresses(child.pid)
        assert all(_is_loopback(address) for address, _ in child_listening), (child.cmdline[:2], child_listening)


def _published_ports(service: dict[str, Any]) -> list[tuple[str | None, str]]:
    """`(host_ip or None, text)` for each port mapping of a compose service (short and long syntax)."""
    found: list[tuple[str | None, str]] = []
    for entry in service.get("ports", []) or []:
        if isinstance(entry, dict):
            found.append((entry.get("host_ip"), json.dumps(entry)))
            continue
        text = str(entry)
        parts = text.rsplit(":", 2)
        found.append((parts[0] if len(parts) == 3 else None, text))
    return found


def test_compose_publishes_on_loopback_only() -> None:
    import yaml

    compose_path = REPO_ROOT / "docker-compose.yml"
    assert compose_path.is_file(), f"expected the GPU compose file at {compose_path}"
    compose = yaml.safe_load(compose_path.read_text())
    mappings = [
        (name, host_ip, text)
        for name, service in (compose.get("services") or {}).items()
        for host_ip, text in _published_ports(service or {})
    ]
    assert mappings, "expected the compose file to publish Triton's ports"
    exposed = [(name, text) for name, host_ip, text in mappings if host_ip != "127.0.0.1"]
    assert not exposed, f"ports published beyond 127.0.0.1: {exposed}"
    for name, service in (compose.get("services") or {}).items():
        assert (service or {}).get("network_mode") != "host", f"service {name} uses the host network"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_admin_token_unlocks_shared_memory(reliability_server: ReliabilityServer, protocol: str) -> None:
    """The typed client sends its admin token under the key each protocol checks: shared-memory inference works
    with the token (right answer), and is refused with a clear error without it."""
    from attnserve.clients.client import TritonClient
    from attnserve.clients.settings import ClientSettings
    from attnserve.errors import InferenceError

    url = reliability_server.http_url if protocol == "http" else reliability_server.grpc_url
    token = reliability_server.server.admin_token  # type: ignore[attr-defined]
    pixels = np.arange(4 * 3 * 8 * 8, dtype=np.uint8).reshape(4, 3, 8, 8)
    common = dict(url=url, protocol=protocol, shared_memory=True, shared_memory_min_bytes=1, retries=0)
    with TritonClient(ClientSettings(**common, admin_token=token)) as client:
        logits = client.infer("rel_light", {"pixels": pixels})["logits"]
    np.testing.assert_allclose(logits, reliability_server.reference("rel_light", pixels), rtol=1e-5, atol=1e-5)
    with TritonClient(ClientSettings(**common)) as client, pytest.raises(InferenceError, match="restricted"):
        client.infer("rel_light", {"pixels": pixels})


def test_compose_restricts_admin_apis_and_requires_the_token() -> None:
    """The compose Triton restricts the same API groups on HTTP and gRPC and refuses to start without a token."""
    import yaml

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    commands = [
        service.get("command") or []
        for service in (compose.get("services") or {}).values()
        if "tritonserver" in (service.get("command") or [])
    ]
    assert len(commands) == 1, "expected exactly one tritonserver service"
    flags = dict(arg.split("=", 1) for arg in commands[0] if arg.startswith("--") and "=" in arg)
    groups = ",".join(RESTRICTED_APIS)
    for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
        assert flags.get(flag, "").startswith(f"{groups}:{ADMIN_TOKEN_HEADER}=${{ATTNSERVE_ADMIN_TOKEN:?"), flags.get(
            flag
        )
    assert flags.get("--model-control-mode") == "explicit"


def test_shared_server_is_loopback_and_restricted(triton_server: Any) -> None:
    """The session's shared server (the project's default launch) has the same protections."""
    server = triton_server.server
    listening = listening_addresses(server.pid)
    assert listening and all(_is_loopback(address) for address, _ in listening), listening
    status, body = _http(triton_server.http_url, "POST", "/v2/repository/index")
    assert status == 403 and RESTRICTED_MESSAGE in body, (status, body)
    status, _ = _http(
        triton_server.http_url, "POST", "/v2/repository/index", {ADMIN_TOKEN_HEADER: triton_server.admin_token}
    )
    assert status == 200
