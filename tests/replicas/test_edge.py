"""The edge: HAProxy terminates TLS (a self-signed certificate made here) and checks an API key; the project's
client and load tester speak TLS and send the key. Without the key, with a wrong one, or in plain text on the TLS
port, a request is refused with a clear status and the replica never sees it."""

from __future__ import annotations

import secrets
import ssl
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from support import tls

from .conftest import require_binary
from .helpers import settled_counts

pytestmark = [pytest.mark.triton, pytest.mark.slow]
MODEL = "rep_light"


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (HAProxy's PEM with certificate + key, the client's CA file)."""
    return tls.make_certificate(folder, require_binary("openssl", "openssl"))


@pytest.fixture(scope="module")
def edge(replica_repository, tmp_path_factory: pytest.TempPathFactory):
    from attnserve.serving.haproxy import EdgeSettings
    from attnserve.serving.replicas import ReplicaOptions, ReplicaSet

    require_binary("haproxy", "haproxy")
    folder = tmp_path_factory.mktemp("edge")
    pem, ca_file = make_certificate(folder)
    key = "-" + secrets.token_urlsafe(24)  # a leading dash once broke the ACL (HAProxy read it as an option)
    settings = EdgeSettings(http_port=0, grpc_port=0, tls_certificate=pem, api_key=key, queue_timeout_ms=1000)
    replica_set = ReplicaSet(
        replica_repository.view,
        settings,
        replicas=1,
        models=[MODEL],
        work_dir=folder / "set",
        options=ReplicaOptions(ready_timeout_s=120),
    )
    with replica_set:
        yield replica_set, ca_file, key


def _client_settings(url: str, protocol: str, **extra):
    from attnserve.clients.settings import ClientSettings

    return ClientSettings(url=url, protocol=protocol, retries=0, **extra)


def _pixels() -> np.ndarray:
    return np.random.default_rng(21).integers(0, 256, (1, 3, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tls_with_the_key_gives_the_direct_answer(edge, protocol) -> None:
    from attnserve.clients.client import TritonClient

    replica_set, ca_file, key = edge
    server = replica_set.servers[0]
    with TritonClient(_client_settings(server.http_url if protocol == "http" else server.grpc_url, protocol)) as direct:
        reference = direct.infer(MODEL, {"pixels": _pixels()})["logits"]
    url = replica_set.http_url if protocol == "http" else replica_set.grpc_url
    before = settled_counts([server.http_url], MODEL)
    with TritonClient(_client_settings(url, protocol, tls=True, tls_ca_file=ca_file, api_key=key)) as client:
        answers = [client.infer(MODEL, {"pixels": _pixels()})["logits"] for _ in range(3)]
    assert settled_counts([server.http_url], MODEL)[0] - before[0] == 3
    for answer in answers:
        np.testing.assert_array_equal(answer, reference)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_tester_speaks_tls_with_the_key(edge, protocol) -> None:
    from attnserve.clients.loadtest import LoadTestOptions, run_loadtest

    replica_set, ca_file, key = edge
    server = replica_set.servers[0]
    before = settled_counts([server.http_url], MODEL)
    url = replica_set.http_url if protocol == "http" else replica_set.grpc_url
    settings = _client_settings(url, protocol, tls=True, tls_ca_file=ca_file, api_key=key)
    report = run_loadtest(
        settings, MODEL, LoadTestOptions(concurrency=[2], warmup_s=0.0, window_s=0.5, min_windows=2, max_windows=2)
    )
    level = report.levels[0]
    assert not level.errors and level.client_success > 0, level.errors
    assert level.client_success == settled_counts([server.http_url], MODEL)[0] - before[0]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", ["no key", "wrong key", "plain text"])
def test_refused_requests_never_reach_the_replica(edge, protocol, case) -> None:
    from attnserve.clients.client import TritonClient

    replica_set, ca_file, key = edge
    server = replica_set.servers[0]
    url = replica_set.http_url if protocol == "http" else replica_set.grpc_url
    options = {
        "no key": {"tls": True, "tls_ca_file": ca_file},
        "wrong key": {"tls": True, "tls_ca_file": ca_file, "api_key": "x" * 32},
        "plain text": {"api_key": key},
    }[case]
    before = settled_counts([server.http_url], MODEL)
    with pytest.raises(Exception) as refused, TritonClient(_client_settings(url, protocol, **options)) as client:
        client.infer(MODEL, {"pixels": _pixels()})
    message = str(refused.value)
    if case != "plain text":  # a clear status and message: HTTP 401, gRPC UNAUTHENTICATED (grpc-status 16)
        assert ("[401]" if protocol == "http" else "UNAUTHENTICATED") in message, message
        assert "missing or wrong API key: send it in the x-api-key header" in message, message
    else:  # the TLS handshake fails: the client cannot even talk to the edge
        assert "connection closed" in message or "Socket closed" in message or "UNAVAILABLE" in message, message
    assert settled_counts([server.http_url], MODEL) == before


def test_health_endpoint_stays_open_for_probes(edge) -> None:
    replica_set, ca_file, _key = edge
    context = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(f"https://{replica_set.http_url}/v2/health/ready", context=context, timeout=5) as r:
        assert r.status == 200
