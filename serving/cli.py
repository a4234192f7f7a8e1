"""`attnserve serve`: the embedded Triton server on a runtime view of the model repository."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from attnserve.defaults import REPOSITORY_DIR
from attnserve.security import DEFAULT_BIND_ADDRESS
from attnserve.serving.flags import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, DEFAULT_METRICS_PORT, TritonEndpoints

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the real Triton server (CPU, embedded) on the model repository until Ctrl-C",
        description=(
            "Start NVIDIA's tritonserver from the nvidia-pytriton wheel on a CPU runtime view of the repository: "
            "ONNX models run through ONNX Runtime (or OpenVINO) in python-backend models, TensorRT plans are "
            "skipped. Restricted APIs need the token from $ATTNSERVE_ADMIN_TOKEN (generated per run when unset)."
        ),
    )
    serve.add_argument("--repository", type=Path, default=REPOSITORY_DIR, help="model repository")
    serve.add_argument("--models", default=None, help="comma-separated model names to load (default: all)")
    serve.add_argument(
        "--runtime",
        choices=("onnxruntime", "openvino"),
        default=None,
        help="CPU runtime for every ONNX model (default: each entry's own, else onnxruntime)",
    )
    serve.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="HTTP/REST port (0: a free one)")
    serve.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port (0: a free one)")
    serve.add_argument(
        "--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="Prometheus metrics port (0: a free one)"
    )
    serve.add_argument("--host", default=DEFAULT_BIND_ADDRESS, help="bind address of HTTP, gRPC and metrics")
    serve.add_argument("--work-dir", type=Path, default=None, help="runtime view, log and token (default: temporary)")
    serve.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for all models READY")
    serve.add_argument(
        "--log-verbose", type=int, nargs="?", const=1, default=0, help="Triton's verbose log level (bare flag: 1)"
    )
    serve.set_defaults(func=run_serve)

    pipelines = subparsers.add_parser(
        "pipelines",
        help="write NAME_preprocess + NAME_pipeline (bytes in -> top-k labels) for exported models",
        description="For each exported model entry (default: every entry whose spec names it), write the python-"
        "backend pre-processing model and the ensemble that chains it to the model.",
    )
    pipelines.add_argument("names", nargs="*", metavar="NAME", help="model entries (default: all exported models)")
    pipelines.add_argument("--repository", type=Path, default=REPOSITORY_DIR, help="model repository")
    pipelines.set_defaults(func=run_pipelines)
    _register_load(subparsers)


def _register_load(subparsers: argparse._SubParsersAction) -> None:
    load = subparsers.add_parser(
        "load",
        help="make a running `attnserve serve` load a new or re-exported model (no restart)",
        description=(
            "Refresh the running server's runtime view with each NAME (and its NAME_explain, NAME_preprocess and "
            "NAME_pipeline; pipeline entries are generated when the repository has none), then ask Triton to "
            "(re)load them through its model-control API. Needs the admin token: $ATTNSERVE_ADMIN_TOKEN, else the "
            "token file the server wrote in its work folder. Finds the server through REPOSITORY/.attnserve-serve.json "
            "(written by `attnserve serve`), or --url and --view."
        ),
    )
    load.add_argument("names", nargs="+", metavar="NAME", help="model entries of the repository (e.g. vit_shapes)")
    load.add_argument("--repository", type=Path, default=REPOSITORY_DIR, help="the served model repository")
    load.add_argument("--url", default=None, help="HTTP host:port of the server (default: from the running serve)")
    load.add_argument(
        "--view", type=Path, default=None, help="the server's runtime view (default: from the running serve)"
    )
    load.add_argument(
        "--runtime",
        choices=("onnxruntime", "openvino"),
        default=None,
        help="CPU runtime for the ONNX entries (default: the server's --runtime, else each entry's own)",
    )
    load.set_defaults(func=run_load)


def run_load(args: argparse.Namespace) -> int:
    """Refresh the view's entries and load them; print what is READY."""
    import os

    from attnserve.errors import UserInputError
    from attnserve.security import ADMIN_TOKEN_ENV
    from attnserve.serving.live import ServeState, load_models, refresh_view, require_exported

    require_exported(args.repository, args.names)  # before looking for a server: say what to run first
    state = None if (args.url and args.view) else ServeState.read(args.repository)
    url = args.url or state.http_url  # type: ignore[union-attr]
    view = args.view or Path(state.view)  # type: ignore[union-attr]
    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    token_file = Path(state.work_dir) / "admin_token" if state is not None else None
    if not token and token_file is not None and token_file.is_file():
        token = token_file.read_text().strip()
    if not token:
        raise UserInputError(f"loading models needs the admin token: set ${ADMIN_TOKEN_ENV} (the server's token)")
    entries = refresh_view(args.repository, view, args.names, args.runtime or (state.runtime if state else None))
    ready = load_models(url, entries, token)
    print(f"loaded into {url}: {', '.join(ready)}")
    not_ready = [name for name in entries if name not in ready]
    if not_ready:
        print(f"not READY: {', '.join(not_ready)} (see the server log)", file=sys.stderr)
        return 1
    return 0


def serve_command(repository: Path, *, ready_timeout_s: float, work_dir: Path | None = None) -> list[str]:
    """The command line that runs `attnserve serve` on `repository` with this Python, on free loopback ports
    (HTTP, gRPC, metrics): for launching a server as a child process and reading its READY line."""
    from attnserve.serving.server import free_port

    command = [sys.executable, "-m", "attnserve.cli", "serve", "--repository", str(repository)]
    if work_dir is not None:
        command += ["--work-dir", str(work_dir)]
    for option in ("--http-port", "--grpc-port", "--metrics-port"):
        command += [option, str(free_port())]
    return [*command, "--ready-timeout", f"{ready_timeout_s:g}"]


def _print_ready(server: Any, loaded: list[str], seconds: float, work_dir: Path) -> None:
    """The READY banner: models, endpoints, log and where the admin token is."""
    print(f"Triton READY in {seconds:.1f} s with {len(loaded)} models: {', '.join(loaded)}")
    print(f"  HTTP    {server.http_url}\n  gRPC    {server.grpc_url}\n  metrics {server.metrics_url}")
    print(f"  log     {server.log_path}")
    token_note = "generated for this run" if server.admin_token_generated else "from $ATTNSERVE_ADMIN_TOKEN"
    print(f"  admin token ({token_note}) in {work_dir / 'admin_token'}")


def run_serve(args: argparse.Namespace) -> int:
    from attnserve.serving.live import ServeState, add_pipeline_entries, remove_state
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.serving.server import ServerProcess, TritonServer
    from attnserve.serving.watchdog import StubWatchdog

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="attnserve-serve-"))
    models = [name.strip() for name in args.models.split(",") if name.strip()] if args.models else None
    started = time.monotonic()
    view, loaded, skipped = build_runtime_repository(args.repository, work_dir, models, runtime=args.runtime)
    loaded += add_pipeline_entries(args.repository, view, loaded)  # `--pipeline` works right after `export`
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if not loaded:
        from attnserve.errors import UserInputError

        raise UserInputError(
            f"nothing the CPU server can load in {args.repository}: expected exported models "
            f"(run `attnserve export NAME` first); skipped: {skipped or 'none'}"
        )
    server = TritonServer(
        view,
        models=loaded,
        endpoints=TritonEndpoints(args.host, args.http_port, args.grpc_port, args.metrics_port),
        work_dir=work_dir,
        process=ServerProcess(log_verbose=args.log_verbose),
    )

    # SIGTERM behaves like Ctrl-C: leave the wait below and stop the server cleanly
    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    watchdog = StubWatchdog(server)  # Triton 2.51 never restarts a dead python-backend stub; this reloads its model
    try:
        server.start()
        server.wait_ready(timeout=args.ready_timeout)
        watchdog.start()
        _print_ready(server, loaded, time.monotonic() - started, work_dir)
        state = ServeState(
            server.http_url, server.grpc_url, str(view), str(work_dir), str(args.repository), os.getpid(), args.runtime
        )
        state.write()
        print("Add or reload an exported model without a restart: attnserve load NAME")
        print("Ctrl-C to stop.", flush=True)
        while server.is_running:
            time.sleep(0.5)
        print(f"Triton exited on its own; last log lines:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping Triton (in-flight requests finish first)...", file=sys.stderr)
        return 0
    finally:
        remove_state(args.repository, os.getpid())
        watchdog.stop()
        exit_code = server.stop()
        logger.info("Triton exited with code %s", exit_code)


def run_pipelines(args: argparse.Namespace) -> int:
    from attnserve.errors import UnknownModelError
    from attnserve.repository.entries import model_entry_specs
    from attnserve.serving.pipelines import write_pipeline_entries

    specs = model_entry_specs(args.repository)
    for name in args.names:
        if name not in specs:
            raise UnknownModelError(name, list(specs))
    for name in args.names or sorted(specs):
        preprocess_dir, pipeline_dir = write_pipeline_entries(specs[name], args.repository)
        written = [preprocess_dir.name, pipeline_dir.name]
        written += [specs[name].postprocess_name] if specs[name].kind == "detection" else []
        written += [specs[name].timeline_name] if specs[name].kind == "video" else []
        print(f"{name}: wrote {', '.join(written[:-1])} and {written[-1]}")
    return 0
