"""Why a connection failed: probe the endpoint once and name the real cause in one line.

Transport errors rarely say what went wrong: gRPC reports "Socket closed" when it reaches an HTTP/1.1 port,
the HTTP client reports "('Expected HTTP/, RTSP/ or ICE/', 8)" when it reaches a gRPC port, and plain text sent
to a TLS port, or a certificate the client does not trust, look like a dead server. After a request has failed
with a connection error (retries spent, or an error retrying cannot heal), `explain_connection_error` opens a
few short connections to the same `host:port` and looks at what answers:

    refused      nothing listens on the port
    tls          a TLS handshake completes (certificate not checked by this probe)
    http1        a plain HTTP/1.1 request gets an `HTTP/1.x` status line (Triton's HTTP port)
    http2        the HTTP/2 connection preface gets a SETTINGS frame back (Triton's gRPC port)
    other        something answers, none of the above

It then compares that with what the client spoke (protocol, TLS on or off, the CA it trusts) and says what to
change. The probe runs only after a failure, on the endpoint the user named; it never sends a request body.
"""

from __future__ import annotations

import socket
import ssl
from typing import Literal

from attnserve.clients.settings import ClientSettings
from attnserve.clients.status import ServerUnavailableError, classify_exception, transport_message
from attnserve.defaults import GRPC_PORT, HTTP_PORT
from attnserve.errors import AttnserveError, InferenceError

Answer = Literal["refused", "tls", "http1", "http2", "other"]

PROBE_TIMEOUT_S = 2.0
"""Each probe connection's limit: a loopback or LAN endpoint answers in milliseconds."""

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"""RFC 9113 section 3.4: the client connection preface, then an empty SETTINGS frame."""
_H2_SETTINGS = 0x04
"""The frame type an HTTP/2 server must send first (RFC 9113 section 3.4)."""


def split_host_port(url: str) -> tuple[str, int]:
    """`host:port` (as `ClientSettings.resolved_url` gives it) as a (host, port) pair; `[v6]:port` too."""
    host, _, port = url.rpartition(":")
    return host.strip("[]"), int(port)


def _exchange(host: str, port: int, payload: bytes, timeout_s: float) -> bytes:
    """Send `payload` on a fresh plain connection and return the first bytes that come back (b"" when closed)."""
    with socket.create_connection((host, port), timeout=timeout_s) as connection:
        connection.sendall(payload)
        try:
            return connection.recv(64)
        except (TimeoutError, ConnectionError):
            return b""


def _tls_handshake(host: str, port: int, context: ssl.SSLContext, timeout_s: float) -> None:
    """Complete a TLS handshake with `context` (raises `ssl.SSLError` / `OSError` when it fails)."""
    with socket.create_connection((host, port), timeout=timeout_s) as connection:
        with context.wrap_socket(connection, server_hostname=host):
            pass


def probe(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> Answer:
    """What answers on `host:port` (see the module docstring)."""
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE  # only asks "does it speak TLS?"; the certificate is checked apart
    try:
        _tls_handshake(host, port, unverified, timeout_s)
        return "tls"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "other"  # silent: the next probes would wait as long again
    except (ssl.SSLError, OSError):
        pass  # a plain server answered the ClientHello with something else, or closed
    try:
        if _exchange(host, port, b"GET /v2/health/live HTTP/1.1\r\nHost: probe\r\n\r\n", timeout_s)[:6] == b"HTTP/1":
            return "http1"
        answer = _exchange(host, port, _H2_PREFACE, timeout_s)
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "other"
    return "http2" if len(answer) >= 9 and answer[3] == _H2_SETTINGS else "other"


def certificate_problem(host: str, port: int, ca_file: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why a TLS client trusting `ca_file` (None: the system's store) refuses the endpoint's certificate, if it
    does (OpenSSL's reason, e.g. "self-signed certificate", or a host name mismatch); None when it accepts it."""
    try:
        _tls_handshake(host, port, ssl.create_default_context(cafile=ca_file), timeout_s)
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message or exc.reason or exc)
    except (ssl.SSLError, OSError):
        return None
    return None


def offers_http2(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TLS endpoint selects HTTP/2 by ALPN, as gRPC over TLS needs (certificate not checked here)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            with context.wrap_socket(connection, server_hostname=host) as secure:
                return secure.selected_alpn_protocol() == "h2"
    except (ssl.SSLError, OSError):
        return False


def explain_connection_error(error: InferenceError, settings: ClientSettings) -> InferenceError | None:
    """A clearer error for a connection failure, from a probe of the endpoint; None when the probe adds nothing.

    Only errors `classify_exception` calls "connection" are probed (an answer from Triton needs no diagnosis).
    """
    if classify_exception(error) != "connection":
        return None
    url = settings.resolved_url
    try:
        host, port = split_host_port(url)
    except ValueError:
        return None
    cause = _cause(probe(host, port), host, port, settings)
    if cause is None:
        return None
    text = " ".join(transport_message(_transport_exception(error)).split())  # one line, whatever the transport said
    attempts = getattr(error, "attempts", 1)
    tried = f"; gave up after {attempts} attempts" if attempts > 1 else ""
    message = f"{cause} (the client said: {text}{tried})"
    explained = ServerUnavailableError(message, status=error.status, model=error.model, kind="connection")
    explained.attempts = attempts
    return explained


def _transport_exception(error: BaseException) -> BaseException:
    """The transport's own exception under the project's wrappers (the first cause that is not one of ours)."""
    seen = {id(error)}
    while isinstance(error, AttnserveError) and error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


def _cause(answer: Answer, host: str, port: int, settings: ClientSettings) -> str | None:
    """The sentence naming the cause and the fix, for what answered and what the client spoke."""
    url, protocol = f"{host}:{port}", settings.protocol
    if answer == "refused":
        return (
            f"nothing is listening on {url} (connection refused): start the server with `attnserve serve`, "
            "or point --url / $ATTNSERVE_URL at a running one"
        )
    if answer == "tls" and not settings.tls:
        return (
            f"{url} speaks TLS and this client sent plain text: set ATTNSERVE_TLS=1 (and ATTNSERVE_TLS_CA_FILE=<PEM of "
            "the certificate authority> when the certificate is self-signed or from a private authority)"
        )
    if answer == "tls":
        trusted = str(settings.tls_ca_file) if settings.tls_ca_file else "the system's certificate store"
        problem = certificate_problem(host, port, str(settings.tls_ca_file) if settings.tls_ca_file else None)
        if problem is None and protocol == "grpc" and not offers_http2(host, port):
            return f"{url} speaks TLS but not HTTP/2 (no ALPN h2), so not gRPC: use --protocol http, or the gRPC port"
        if problem is None:
            return None
        return (
            f"the TLS certificate of {url} is not trusted: {problem} (trusting {trusted}); set "
            "ATTNSERVE_TLS_CA_FILE to the PEM of the authority that signed it (for a self-signed one: the certificate)"
        )
    if answer in ("http1", "http2") and settings.tls:
        spoken = "HTTP/1.1" if answer == "http1" else "HTTP/2 (gRPC)"
        return f"{url} does not speak TLS (it answers plain {spoken}): unset ATTNSERVE_TLS, or use the TLS port"
    if answer == "http1" and protocol == "grpc":
        return (
            f"{url} answers HTTP/1.1, not gRPC: it looks like an HTTP port (Triton serves HTTP on {HTTP_PORT} and "
            f"gRPC on {GRPC_PORT} by default); use --protocol http, or the gRPC port"
        )
    if answer == "http2" and protocol == "http":
        return (
            f"{url} answers HTTP/2 only, not HTTP/1.1: it looks like a gRPC port (Triton serves HTTP on {HTTP_PORT} "
            f"and gRPC on {GRPC_PORT} by default); use --protocol grpc, or the HTTP port"
        )
    return None
