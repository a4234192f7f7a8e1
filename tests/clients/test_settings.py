"""ClientSettings: environment, URL resolution, token header, validation (no server needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from attnserve.clients.settings import ClientSettings
from attnserve.security import ADMIN_TOKEN_ENV, ADMIN_TOKEN_HEADER


def test_settings_read_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNSERVE_URL", "http://example.internal")
    monkeypatch.setenv("ATTNSERVE_PROTOCOL", "http")
    monkeypatch.setenv("ATTNSERVE_RETRIES", "7")
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "s3cret")
    settings = ClientSettings()
    assert settings.resolved_url == "example.internal:8000"
    assert settings.retries == 7
    assert settings.admin_headers() == {ADMIN_TOKEN_HEADER: "s3cret"}
    assert "s3cret" not in repr(settings)


def test_default_url_is_loopback_with_protocol_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATTNSERVE_URL", raising=False)
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    assert ClientSettings(protocol="grpc").resolved_url == "127.0.0.1:8001"
    assert ClientSettings(protocol="http", url="10.0.0.5:9000/").resolved_url == "10.0.0.5:9000"
    assert ClientSettings().admin_headers() == {}


def test_bad_settings_say_what_conflicts() -> None:
    with pytest.raises(ValidationError, match="backoff_max_s"):
        ClientSettings(backoff_s=1.0, backoff_max_s=0.5)
    with pytest.raises(ValidationError, match="protocol"):
        ClientSettings(protocol="smtp")


def test_tls_and_api_key_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("ATTNSERVE_TLS", "1")
    monkeypatch.setenv("ATTNSERVE_TLS_CA_FILE", str(ca_file))
    monkeypatch.setenv("ATTNSERVE_API_KEY", "edge-key-0123456789")
    settings = ClientSettings()
    assert settings.tls and settings.tls_ca_file == ca_file
    assert settings.api_key is not None and "edge-key" not in repr(settings)
    monkeypatch.delenv("ATTNSERVE_TLS")
    with pytest.raises(ValidationError, match="tls is off"):
        ClientSettings()
    with pytest.raises(ValidationError, match="is not a file"):
        ClientSettings(tls=True, tls_ca_file=tmp_path / "absent.pem")
