"""The embedded Triton server: NVIDIA's real `tritonserver` binary from the `nvidia-pytriton` wheel.

How it runs without Docker (docs/measured.md#embedded-triton): the wheel's `pytriton/tritonserver` folder is copied to a work
folder, the python-backend stub built for the running Python is copied into `backends/python/`,
`LD_LIBRARY_PATH` points at the wheel's `nvidia_pytriton.libs` and the virtual environment's `bin` goes
first on `PATH` (the stub imports numpy, onnxruntime and attnserve from there).

    with TritonServer(runtime_repository, models=["vit_tiny"], endpoints=TritonEndpoints.any_free()) as server:
        ...  # server.http_url, server.grpc_url, server.metrics_url

The server runs in its own process group, so stopping it (SIGTERM, in-flight requests finish, then
SIGKILL after a timeout) also ends the python-backend stub processes it started: no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from attnserve.errors import ServerError, UserInputError
from attnserve.security import ADMIN_TOKEN_ENV, ADMIN_TOKEN_HEADER, DEFAULT_BIND_ADDRESS, GRPC_ADMIN_TOKEN_HEADER
from attnserve.serving.flags import DEFAULT_EXIT_TIMEOUT_S, TritonEndpoints, triton_args

logger = logging.getLogger(__name__)

LOG_FILENAME = "tritonserver.log"
ADMIN_TOKEN_FILENAME = "admin_token"
_FAILED_LOAD = re.compile(r"failed to load '([^']+)'[^:]*:\s*(.*)")
_PR_SET_PDEATHSIG = 1


# ---------------------------------------------------------------------------------------------------------
# the binary from the wheel
# ---------------------------------------------------------------------------------------------------------
def wheel_tritonserver_dir() -> Path:
    """The `pytriton/tritonserver` folder of the installed `nvidia-pytriton` wheel.

    Raises:
        ServerError: the wheel is not installed (install the `serve` extra).
    """
    try:
        import pytriton
    except ImportError as exc:
        raise ServerError(
            "the embedded Triton server needs the `nvidia-pytriton` wheel: pip install -e '.[serve]'"
        ) from exc
    server_dir = Path(pytriton.__file__).parent / "tritonserver"
    if not (server_dir / "bin" / "tritonserver").is_file():
        raise ServerError(f"expected the tritonserver binary at {server_dir / 'bin' / 'tritonserver'}; not found")
    return server_dir


def wheel_libs_dir() -> Path:
    """The wheel's bundled shared libraries (`site-packages/nvidia_pytriton.libs`)."""
    libs_dir = wheel_tritonserver_dir().parent.parent / "nvidia_pytriton.libs"
    if not libs_dir.is_dir():
        raise ServerError(f"expected the wheel's shared libraries at {libs_dir}; not found")
    return libs_dir


def install_server(target_dir: Path) -> Path:
    """Copy the wheel's Triton (binary, backends) into `target_dir` with the stub for this Python.

    Returns:
        The copied `tritonserver` folder (holding `bin/tritonserver` and `backends/`).
    """
    source_dir = wheel_tritonserver_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        known = sorted(p.name for p in (source_dir / "python_backend_stubs").iterdir())
        raise ServerError(f"no python-backend stub for Python {version} in the wheel; it has {known}")
    server_dir = Path(target_dir) / "tritonserver"
    if server_dir.exists():
        shutil.rmtree(server_dir)
    shutil.copytree(source_dir, server_dir, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
    shutil.copy2(stub, server_dir / "backends" / "python" / stub.name)
    return server_dir


def server_environment(extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for `tritonserver`: the wheel's libraries and this virtual environment's `bin` first."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [str(wheel_libs_dir()), env.get("LD_LIBRARY_PATH", "")] if p)
    env.pop(ADMIN_TOKEN_ENV, None)  # the stubs never need the token
    env.update(extra_env or {})
    return env


# ---------------------------------------------------------------------------------------------------------
# ports and token
# ---------------------------------------------------------------------------------------------------------
def free_port(address: str = DEFAULT_BIND_ADDRESS) -> int:
    """A port the OS reports free on `address` right now (another process may still take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def check_port_free(address: str, port: int, endpoint: str) -> None:
    """Raise ServerError naming the endpoint when `address:port` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton does: TIME_WAIT is not "taken"
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise ServerError(
                f"cannot start Triton: {endpoint} port {port} on {address} is already in use ({exc.strerror}); "
                f"pick another with --{endpoint}-port"
            ) from exc


def resolve_admin_token(explicit: str | None = None) -> tuple[str, bool]:
    """The admin token for restricted APIs: `explicit`, else `$ATTNSERVE_ADMIN_TOKEN`, else a random one.

    Returns:
        `(token, generated)`: generated is True when a fresh random token was made for this run.
    """
    token = explicit or os.environ.get(ADMIN_TOKEN_ENV, "")
    if token:
        return token, False
    return secrets.token_urlsafe(24), True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the server when the process that started it dies (no orphans after a crash)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_setup(die_with_parent: bool, cpus: frozenset[int] | None) -> None:  # pragma: no cover - in the child
    """Between fork and exec: the parent-death signal, and the CPU set the server and its stubs inherit."""
    if die_with_parent:
        _die_with_parent()
    if cpus:
        os.sched_setaffinity(0, cpus)


# ---------------------------------------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------------------------------------
class HttpGrpcEndpoints:
    """The `host:port` URLs (tritonclient's `url` form; no scheme) of an HTTP + gRPC endpoint pair.

    A subclass sets `http_port` and `grpc_port` and says where it binds (`bind_host`); a wildcard bind is
    reached on 127.0.0.1.
    """

    http_port: int
    grpc_port: int

    @property
    def bind_host(self) -> str:
        """The address the endpoints bind to."""
        raise NotImplementedError

    @property
    def _connect_host(self) -> str:
        return "127.0.0.1" if self.bind_host in ("0.0.0.0", "") else self.bind_host

    @property
    def http_url(self) -> str:
        """`host:port` of the HTTP endpoint."""
        return f"{self._connect_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """`host:port` of the gRPC endpoint."""
        return f"{self._connect_host}:{self.grpc_port}"


@dataclass(frozen=True)
class ServerProcess:
    """How the `tritonserver` process runs: logging, shutdown grace, environment, parent link, CPUs."""

    log_verbose: int = 0
    """Triton's verbose log level."""
    exit_timeout_s: int = DEFAULT_EXIT_TIMEOUT_S
    """Seconds in-flight requests get to finish after SIGTERM."""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """More environment variables for the server (and its python-backend stubs)."""
    die_with_parent: bool = True
    """SIGTERM the server if the starting thread's process dies (Linux `PR_SET_PDEATHSIG`)."""
    cpus: Sequence[int] | None = None
    """CPU numbers the server and its python-backend stubs may run on (Linux affinity; None = all this process
    may use). The runner sizes ONNX Runtime's thread pools from it (`available_cores`)."""


class TritonServer(HttpGrpcEndpoints):
    """A real `tritonserver` process on a model repository (context manager: start + wait_ready / stop).

    Args:
        repository: a repository Triton can load as it is (for the CPU server: the runtime view from
            `attnserve.serving.runtime_view.build_runtime_repository`).
        models: models to load at start-up (explicit model control); None loads all of them.
        endpoints: bind address (loopback by default) and ports of the three endpoints; a port 0 picks a free
            one (`TritonEndpoints.any_free()`).
        admin_token: token for the restricted APIs; None reads `$ATTNSERVE_ADMIN_TOKEN` or generates one
            (logged as generated; readable as `.admin_token` and from `work_dir/admin_token`, mode 0600).
        work_dir: where the binary copy and the log go; None uses a fresh temporary folder, removed on stop.
        process: log level, shutdown grace, environment, parent link and CPUs (default: `ServerProcess()`).
    """

    def __init__(
        self,
        repository: Path | str,
        *,
        models: Sequence[str] | None = None,
        endpoints: TritonEndpoints | None = None,
        admin_token: str | None = None,
        work_dir: Path | str | None = None,
        process: ServerProcess | None = None,
    ) -> None:
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise UserInputError(f"model repository {self.repository} is not a folder")
        self.models = list(models) if models is not None else None
        endpoints = endpoints or TritonEndpoints()
        process = process or ServerProcess()
        self.host = host = endpoints.host
        self.http_port = endpoints.http_port or free_port(host)
        self.grpc_port = endpoints.grpc_port or free_port(host)
        self.metrics_port = endpoints.metrics_port or free_port(host)
        self.admin_token, self.admin_token_generated = resolve_admin_token(admin_token)
        self._owns_work_dir = work_dir is None
        # Absolute: the binary is started with another working directory (relative paths would break).
        self.work_dir = (
            Path(work_dir).resolve() if work_dir is not None else Path(tempfile.mkdtemp(prefix="attnserve-triton-"))
        )
        self.log_path = self.work_dir / LOG_FILENAME
        self.log_verbose = process.log_verbose
        self.exit_timeout_s = process.exit_timeout_s
        self.extra_env = dict(process.extra_env)
        self.die_with_parent = process.die_with_parent
        self.cpus = frozenset(process.cpus) if process.cpus else None
        self._process: subprocess.Popen[bytes] | None = None

    # endpoints -------------------------------------------------------------------------------------------
    @property
    def bind_host(self) -> str:
        return self.host

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics page."""
        return f"http://{self._connect_host}:{self.metrics_port}/metrics"

    @property
    def admin_headers(self) -> dict[str, str]:
        """The HTTP header that unlocks the restricted APIs (`headers=` of tritonclient.http calls)."""
        return {ADMIN_TOKEN_HEADER: self.admin_token}

    @property
    def grpc_admin_headers(self) -> dict[str, str]:
        """The gRPC metadata that unlocks the restricted protocols (Triton prefixes the key on gRPC)."""
        return {GRPC_ADMIN_TOKEN_HEADER: self.admin_token}

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, server_dir: Path) -> list[str]:
        """The full command line (binary + `triton_args`) for a server installed in `server_dir`."""
        return [
            str(server_dir / "bin" / "tritonserver"),
            *triton_args(
                self.repository,
                models=self.models,
                admin_token=self.admin_token,
                endpoints=TritonEndpoints(self.host, self.http_port, self.grpc_port, self.metrics_port),
                backend_directory=server_dir / "backends",
                log_verbose=self.log_verbose,
                exit_timeout_s=self.exit_timeout_s,
            ),
        ]

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the process (returns at once; call `wait_ready`).

        Raises:
            ServerError: already running, a port is taken, or the binary cannot be installed.
        """
        if self.is_running:
            raise ServerError(f"Triton is already running (pid {self.pid})")
        for endpoint, port in (("http", self.http_port), ("grpc", self.grpc_port), ("metrics", self.metrics_port)):
            check_port_free(self.host, port, endpoint)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        server_dir = install_server(self.work_dir)
        token_path = self.work_dir / ADMIN_TOKEN_FILENAME
        token_path.touch(mode=0o600)
        token_path.chmod(0o600)  # also when the file was already there
        token_path.write_text(self.admin_token + "\n")
        if self.admin_token_generated:
            logger.warning(
                "%s is not set: generated a random admin token for this run (written to %s)",
                ADMIN_TOKEN_ENV,
                token_path,
            )
        command = self.command(server_dir)
        logger.info("starting Triton: %s", " ".join(c for c in command if "restricted" not in c))
        with open(self.log_path, "wb") as log_file:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=server_environment(self.extra_env),
                cwd=self.work_dir,
                start_new_session=True,  # own process group: stop() ends the stubs with it
                preexec_fn=functools.partial(_child_setup, self.die_with_parent, self.cpus),
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until `/v2/health/ready` answers 200 (all listed models loaded).

        Raises:
            ServerError: the process exited, or `timeout` seconds passed; the message holds the models that
                failed to load and the tail of Triton's log. The server is stopped before raising.
        """
        if self._process is None:
            raise ServerError("wait_ready() before start()")
        deadline = time.monotonic() + timeout
        ready_url = f"http://{self.http_url}/v2/health/ready"
        while True:
            exit_code = self._process.poll()
            if exit_code is not None:
                message = f"Triton exited with code {exit_code} before it was ready"
                self._cleanup_after_exit()
                raise ServerError(self._failure_message(message))
            if _http_ok(ready_url):
                logger.info(
                    "Triton ready: http %s, grpc %s, metrics %s", self.http_url, self.grpc_url, self.metrics_url
                )
                return
            if time.monotonic() > deadline:
                message = f"Triton was not ready within {timeout:.0f} s"
                self.stop()
                raise ServerError(self._failure_message(message))
            time.sleep(0.2)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the server (in-flight requests finish), wait, then SIGKILL its whole process group.

        Args:
            timeout: seconds to wait after SIGTERM; default `exit_timeout_s + 15`.

        Returns:
            The server's exit code, or None when it was not started.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout if timeout is not None else self.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                logger.warning("Triton (pid %d) did not exit after SIGTERM; killing its process group", process.pid)
                _kill_group(process.pid)
                process.wait()
        self._cleanup_after_exit()
        return process.returncode

    def _cleanup_after_exit(self) -> None:
        """Kill stragglers of the process group (stubs of a crashed server) and drop the binary copy."""
        assert self._process is not None
        pgid = self._process.pid
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(pgid):
            logger.warning("killing leftover processes of Triton's group %d", pgid)
            _kill_group(pgid)
        shutil.rmtree(self.work_dir / "tritonserver", ignore_errors=True)
        if self._owns_work_dir:
            # keep the log when the run failed: it is what explains the failure
            if self._process.returncode == 0:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    # diagnostics -----------------------------------------------------------------------------------------
    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of Triton's log (stdout and stderr together)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failed_models(self) -> dict[str, str]:
        """Models whose load failed, with Triton's reason, read from the log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return {}
        return {match.group(1): match.group(2).strip().rstrip('"') for match in _FAILED_LOAD.finditer(text)}

    def _failure_message(self, headline: str) -> str:
        failed = self.failed_models()
        parts = [headline]
        if failed:
            parts.append("models that failed to load: " + "; ".join(f"{n}: {r}" for n, r in failed.items()))
        parts.append(f"last lines of {self.log_path}:\n{self.log_tail()}")
        return "\n".join(parts)

    # context manager -------------------------------------------------------------------------------------
    def __enter__(self) -> TritonServer:
        self.start()
        self.wait_ready()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return f"TritonServer({self.repository}, http={self.http_url}, grpc={self.grpc_url}, {state})"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
