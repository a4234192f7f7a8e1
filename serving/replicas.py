"""A replica set on one host: N real Triton servers on one repository, HAProxy in front.

    with ReplicaSet(runtime_view, EdgeSettings(http_port=0, grpc_port=0), replicas=2, models=["vit_digits"]) as rs:
        ...  # rs.http_url / rs.grpc_url: the load balancer; rs.servers[i]: each replica (its own free ports)

Every replica is a `TritonServer` (same flags, same admin token) on free ports of 127.0.0.1; HAProxy's
configuration is generated from `EdgeSettings` (`attnserve.serving.haproxy`). A supervisor thread restarts a
replica whose process died (on the same ports, so HAProxy's health check brings it back into rotation) and
records each restart. `stop()` ends HAProxy first (it holds keep-alive connections the replicas would wait
for), then every replica with its process group: nothing is left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from attnserve.errors import ServerError, UserInputError
from attnserve.serving.flags import TritonEndpoints
from attnserve.serving.haproxy import API_KEY_ENV, EdgeSettings, ReplicaPorts, haproxy_binary, haproxy_config
from attnserve.serving.server import (
    HttpGrpcEndpoints,
    ServerProcess,
    TritonServer,
    _die_with_parent,
    check_port_free,
    free_port,
)

logger = logging.getLogger(__name__)

HAPROXY_CONFIG_FILENAME = "haproxy.cfg"
HAPROXY_LOG_FILENAME = "haproxy.log"
_SUPERVISE_PERIOD_S = 0.2
_RESTART_BACKOFF_MAX_S = 30.0


@dataclass
class Restart:
    """One restart of a replica by the supervisor."""

    replica: int
    died_at: float
    """time.monotonic() when the supervisor saw the process gone."""
    ready_at: float | None = None
    """time.monotonic() when it answered ready again (None: not yet, or it failed)."""
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.died_at


def cpu_shares(replicas: int) -> list[list[int] | None]:
    """This process's CPUs split into `replicas` disjoint, near-equal sets (None each when there are fewer CPUs
    than replicas: sharing is then unavoidable, and the runner's default threads apply)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < replicas:
        return [None] * replicas
    size, extra = divmod(len(cpus), replicas)
    shares: list[list[int] | None] = []
    start = 0
    for i in range(replicas):
        end = start + size + (1 if i < extra else 0)
        shares.append(cpus[start:end])
        start = end
    return shares


@dataclass(frozen=True)
class ReplicaOptions:
    """How the replicas run and are supervised."""

    exit_timeout_s: int = 5
    """Triton's grace for in-flight requests on stop."""
    ready_timeout_s: float = 300.0
    """How long a (re)started replica may take to become ready."""
    restart: bool = True
    """Restart replicas whose process died."""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """More environment for the replicas."""
    pin_cpus: bool = True
    """Give each replica its own share of this process's CPUs (Linux affinity), as a Kubernetes CPU request gives
    each pod its own: the runner sizes ONNX Runtime's threads from it, so N replicas on one host do not each start
    a thread per core and fight over them (their tail latency). Ignored when there are more replicas than CPUs."""


class ReplicaSet(HttpGrpcEndpoints):
    """N `TritonServer`s on one repository behind a generated HAProxy (context manager).

    Args:
        repository: a repository Triton loads as it is (the CPU runtime view).
        edge: the load balancer's settings (ports, admission control, TLS, API key).
        replicas: how many Triton servers.
        models: models each replica loads (None: all).
        admin_token: token of the restricted APIs, the same on every replica (None: env or generated).
        work_dir: each replica's folder, HAProxy's configuration and log.
        options: shutdown grace, readiness timeout, restarts, environment, CPU pinning (default:
            `ReplicaOptions()`).
    """

    def __init__(
        self,
        repository: Path | str,
        edge: EdgeSettings,
        *,
        replicas: int = 2,
        models: Sequence[str] | None = None,
        admin_token: str | None = None,
        work_dir: Path | str,
        options: ReplicaOptions | None = None,
    ) -> None:
        if not 1 <= replicas <= 16:
            raise UserInputError(f"replicas must be in 1..16, got {replicas}")
        self.edge = edge
        self.work_dir = Path(work_dir).resolve()
        options = options or ReplicaOptions()
        self.ready_timeout_s = options.ready_timeout_s
        self.restart_enabled = options.restart
        self.http_port = edge.http_port or free_port(edge.host)
        self.grpc_port = edge.grpc_port or free_port(edge.host)
        self.servers = [
            TritonServer(
                repository,
                models=models,
                endpoints=TritonEndpoints.any_free(),
                admin_token=admin_token,
                work_dir=self.work_dir / f"replica-{i}",
                process=ServerProcess(exit_timeout_s=options.exit_timeout_s, extra_env=options.extra_env, cpus=cpus),
            )
            for i, cpus in enumerate(cpu_shares(replicas) if options.pin_cpus else [None] * replicas)
        ]
        token = self.servers[0].admin_token
        for server in self.servers[1:]:
            server.admin_token, server.admin_token_generated = token, False  # one token for the whole set
        self.restarts: list[Restart] = []
        self._haproxy: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._lock = threading.Lock()

    # endpoints (`http_url`, `grpc_url`: the load balancer's) ---------------------------------------------------
    @property
    def bind_host(self) -> str:
        return self.edge.host

    @property
    def admin_token(self) -> str:
        return self.servers[0].admin_token

    @property
    def config_path(self) -> Path:
        return self.work_dir / HAPROXY_CONFIG_FILENAME

    @property
    def haproxy_pid(self) -> int | None:
        return self._haproxy.pid if self._haproxy is not None else None

    def ports(self) -> list[ReplicaPorts]:
        """Each replica's ports, as HAProxy's configuration lists them."""
        return [
            ReplicaPorts(f"replica{i}", s.http_port, s.grpc_port, s.metrics_port) for i, s in enumerate(self.servers)
        ]

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the replicas and HAProxy; return when the load balancer answers ready.

        Raises:
            ServerError: HAProxy is missing (the message names the Debian package), a port is taken, a replica
                did not become ready, or HAProxy refused its configuration. Everything started is stopped.
        """
        binary = haproxy_binary()  # before starting anything: a missing binary is the likeliest failure
        for endpoint, port in (("http", self.http_port), ("grpc", self.grpc_port)):
            check_port_free(self.edge.host, port, endpoint)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            for server in self.servers:
                server.start()
            for server in self.servers:
                server.wait_ready(timeout=self.ready_timeout_s)
            self._start_haproxy(binary)
        except BaseException:
            self.stop()
            raise
        if self.restart_enabled:
            self._supervisor = threading.Thread(target=self._supervise, name="replica-supervisor", daemon=True)
            self._supervisor.start()

    def _start_haproxy(self, binary: str) -> None:
        self.config_path.write_text(haproxy_config(self.edge, self.ports(), self.http_port, self.grpc_port))
        check = subprocess.run(
            [binary, "-c", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            env=self._env(),
            check=False,
        )
        if check.returncode != 0:
            raise ServerError(f"HAProxy refused {self.config_path}:\n{check.stdout}{check.stderr}")
        with open(self.work_dir / HAPROXY_LOG_FILENAME, "wb") as log_file:
            self._haproxy = subprocess.Popen(
                [binary, "-db", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._wait_edge_ready()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(API_KEY_ENV, None)
        if self.edge.api_key is not None:
            env[API_KEY_ENV] = self.edge.api_key.get_secret_value()
        return env

    def _wait_edge_ready(self, timeout: float = 20.0) -> None:
        """Until the readiness URL answers 200 through HAProxy once per replica (round-robin: each one UP)."""
        assert self._haproxy is not None
        url = f"{'https' if self.edge.tls else 'http'}://{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._haproxy.poll() is not None:
                raise ServerError(f"HAProxy exited with code {self._haproxy.returncode}:\n{self.haproxy_log()}")
            if all(_edge_ok(url) for _ in self.servers):
                time.sleep(self.edge.check_interval_ms / 1000)  # first health checks of every server done
                return
            time.sleep(0.1)
        raise ServerError(f"HAProxy did not answer on {self.http_url} within {timeout:.0f} s:\n{self.haproxy_log()}")

    def haproxy_log(self, lines: int = 30) -> str:
        try:
            text = (self.work_dir / HAPROXY_LOG_FILENAME).read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _supervise(self) -> None:
        """Restart replicas whose process died (same ports: HAProxy's checks put them back in rotation).

        A replica whose restart failed is tried again after a backoff that doubles up to `_RESTART_BACKOFF_MAX_S`.
        """
        not_before = [0.0] * len(self.servers)
        backoff = [_SUPERVISE_PERIOD_S] * len(self.servers)
        while not self._stopping.wait(_SUPERVISE_PERIOD_S):
            for index, server in enumerate(self.servers):
                if self._stopping.is_set() or server.is_running or time.monotonic() < not_before[index]:
                    continue
                if self._restart(index, server):
                    backoff[index] = _SUPERVISE_PERIOD_S
                else:
                    backoff[index] = min(backoff[index] * 2, _RESTART_BACKOFF_MAX_S)
                    not_before[index] = time.monotonic() + backoff[index]

    def _restart(self, index: int, server: TritonServer) -> bool:
        record = Restart(index, time.monotonic())
        logger.warning("replica %d (pid %s) died; restarting it", index, server.pid)
        with self._lock:
            self.restarts.append(record)
        try:
            server.stop()  # reaps it and kills its leftover python-backend stubs
            # No preexec_fn (PR_SET_PDEATHSIG) from this thread: running Python code between fork and exec in a
            # process with gRPC/gevent threads crashed the child (seen in the tests). stop() still ends it.
            server.die_with_parent = False
            server.start()
            server.wait_ready(timeout=self.ready_timeout_s)
            record.ready_at = time.monotonic()
            logger.warning("replica %d ready again after %.1f s", index, record.seconds)
            return True
        except ServerError as exc:
            record.error = str(exc)
            logger.error("replica %d failed to restart: %s", index, exc)
            return False

    def stop(self) -> None:
        """Stop the supervisor, HAProxy, then every replica (process groups included)."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=self.ready_timeout_s + 30)
            self._supervisor = None
        if self._haproxy is not None and self._haproxy.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._haproxy.send_signal(signal.SIGTERM)  # hard stop: HAProxy closes every connection
            try:
                self._haproxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._haproxy.pid, signal.SIGKILL)
                self._haproxy.wait()
        for server in self.servers:
            server.stop()

    def __enter__(self) -> ReplicaSet:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ReplicaSet({len(self.servers)} replicas, http={self.http_url}, grpc={self.grpc_url})"


def _edge_ok(url: str) -> bool:
    """GET `url` on our own loopback edge; the certificate is not verified (this probe only asks "is it up")."""
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
