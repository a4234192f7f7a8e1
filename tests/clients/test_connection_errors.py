"""A request that cannot connect says why, in one line, against real listeners on 127.0.0.1: nothing listening, the
gRPC client on Triton's HTTP port and the HTTP client on its gRPC port (the tests' real Triton), plain text sent
to a TLS port and a certificate the client does not trust (a real HTTPS server with a self-signed certificate made
by `openssl`). A mismatch that retrying cannot heal is not retried; empty or bad `ATTNSERVE_*` settings are one line.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from support import tls
from support.binaries import require_binary

from attnserve.cli import main
from attnserve.clients.client import TritonClient
from attnserve.clients.settings import ClientSettings
from attnserve.clients.status import ServerUnavailableError


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path)
    return path


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of an HTTPS server whose certificate is self-signed (trusted by no system store)."""
    pem, _ = tls.make_certificate(tmp_path_factory.mktemp("tls"), require_binary("openssl", "openssl"))
    with tls.https_server(pem) as url:
        yield url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _one_line_error(capsys: pytest.CaptureFixture[str], arguments: list[str]) -> str:
    assert main(arguments) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error, error
    return error


def test_nothing_listening_is_named(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"127.0.0.1:{_free_port()}"
    error = _one_line_error(capsys, ["infer", "--model", "vit_shapes", str(image), "--url", url, "--timeout-s", "2"])
    assert f"nothing is listening on {url}" in error and "attnserve serve" in error, error


@pytest.mark.triton
@pytest.mark.parametrize(
    ("protocol", "port", "expected"),
    [
        ("grpc", "http_url", "looks like an HTTP port"),  # the transport says only "Socket closed"
        ("http", "grpc_url", "looks like a gRPC port"),  # the transport says "('Expected HTTP/, RTSP/ or ICE/', 8)"
    ],
)
def test_the_wrong_protocol_for_the_port_is_named(
    triton_server: Any, image: Path, capsys: pytest.CaptureFixture[str], protocol: str, port: str, expected: str
) -> None:
    url = getattr(triton_server, port)
    error = _one_line_error(
        capsys, ["infer", "--model", "vit_shapes", str(image), "--url", url, "--protocol", protocol]
    )
    other = "http" if protocol == "grpc" else "grpc"
    assert expected in error and f"--protocol {other}" in error and "Is the server running" not in error, error


@pytest.mark.triton
def test_the_http_client_on_the_grpc_port_is_not_retried(triton_server: Any) -> None:
    settings = ClientSettings(url=triton_server.grpc_url, protocol="http", retries=3)
    with TritonClient(settings) as client, pytest.raises(ServerUnavailableError) as raised:
        client.model_info("vit_shapes")
    assert raised.value.attempts == 1  # a gRPC port never turns into an HTTP/1.1 one


@pytest.mark.triton
def test_tls_sent_to_a_plain_port_is_named(triton_server: Any, image: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ATTNSERVE_TLS", "1")
    url = triton_server.http_url
    error = _one_line_error(capsys, ["infer", "--model", "vit_shapes", str(image), "--url", url, "--protocol", "http"])
    assert f"{url} does not speak TLS" in error and "ATTNSERVE_TLS" in error, error


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_plain_text_sent_to_a_tls_port_is_named(https: str, image: Path, capsys, protocol: str) -> None:
    arguments = ["infer", "--model", "vit_shapes", str(image), "--url", https, "--protocol", protocol]
    error = _one_line_error(capsys, [*arguments, "--timeout-s", "5"])
    assert f"{https} speaks TLS and this client sent plain text" in error and "ATTNSERVE_TLS=1" in error, error


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_untrusted_certificate_is_named_and_not_retried(https: str, monkeypatch, protocol: str) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    settings = ClientSettings(url=https, protocol=protocol, tls=True, retries=3, timeout_s=5)  # the system's store
    with TritonClient(settings) as client, pytest.raises(ServerUnavailableError) as raised:
        client.model_info("vit_shapes")
    message = str(raised.value)
    assert f"the TLS certificate of {https} is not trusted" in message and "self-signed" in message, message
    assert "ATTNSERVE_TLS_CA_FILE" in message and len(message.splitlines()) == 1
    assert raised.value.attempts == 1  # the same certificate is refused every time


def test_an_empty_ca_file_variable_is_unset_and_a_bad_one_is_one_line(image: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ATTNSERVE_TLS_CA_FILE", "")
    assert ClientSettings().tls_ca_file is None
    url = f"127.0.0.1:{_free_port()}"
    arguments = ["infer", "--model", "vit_shapes", str(image), "--url", url, "--timeout-s", "2"]
    assert "nothing is listening" in _one_line_error(capsys, arguments)  # got as far as connecting
    monkeypatch.setenv("ATTNSERVE_TLS", "1")
    monkeypatch.setenv("ATTNSERVE_TLS_CA_FILE", str(image.parent / "absent.pem"))
    error = _one_line_error(capsys, arguments)
    assert "tls_ca_file" in error and "absent.pem" in error and "pydantic" not in error, error
