"""`attnserve replicas`: N embedded Triton servers on one repository behind a generated HAProxy."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from attnserve.defaults import REPOSITORY_DIR
from attnserve.security import DEFAULT_BIND_ADDRESS
from attnserve.serving.flags import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT

logger = logging.getLogger(__name__)

API_KEY_FROM_ENV = "ATTNSERVE_API_KEY"
"""The edge key is read from the environment (never a command-line argument: `ps` would show it)."""


if TYPE_CHECKING:
    from attnserve.serving.haproxy import EdgeSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replicas",
        help="run N real Triton servers on the repository behind HAProxy (per-request balancing, admission control)",
        description=(
            "Start N embedded Triton servers on a CPU runtime view of the repository (each on free ports of "
            "127.0.0.1) and HAProxy (Debian package `haproxy`) in front on --http-port / --grpc-port: every HTTP and "
            "gRPC request is balanced round-robin over the ready replicas, a failed connection is retried on another "
            "replica, at most --maxconn requests run per replica and a request that finds every replica busy waits "
            "at most --queue-timeout-ms, then gets 503 / UNAVAILABLE. A replica that dies is restarted. With "
            "--tls-cert the edge speaks TLS; with $ATTNSERVE_API_KEY set (and --require-api-key) every request "
            "needs it in the x-api-key header. See docs/replicas.md."
        ),
    )
    parser.add_argument("--replicas", type=int, default=2, help="number of Triton servers (1..16; default 2)")
    parser.add_argument("--repository", type=Path, default=REPOSITORY_DIR, help="model repository")
    parser.add_argument("--models", default=None, help="comma-separated model names to load (default: all)")
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="the load balancer's HTTP port")
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="the load balancer's gRPC port")
    parser.add_argument("--host", default=DEFAULT_BIND_ADDRESS, help="the load balancer's bind address")
    parser.add_argument("--maxconn", type=int, default=4, help="requests in flight per replica (default 4)")
    parser.add_argument(
        "--queue-timeout-ms", type=int, default=10, help="longest wait for a free replica before 503 (default 10)"
    )
    parser.add_argument(
        "--buffer-kb",
        type=int,
        default=64,
        help="HAProxy's buffer in KiB: a request must fit to be retried elsewhere (default 64; 256 for 224px RGB)",
    )
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM with certificate + key: the edge speaks TLS")
    parser.add_argument(
        "--require-api-key",
        action="store_true",
        help=f"refuse requests without the key from ${API_KEY_FROM_ENV} in the x-api-key header (401); the key must "
        "be at least 16 characters, without spaces, quotes, '\\' or '$'",
    )
    parser.add_argument(
        "--no-pin-cpus",
        action="store_true",
        help="let every replica run on every CPU (default: each replica gets its own share of the CPUs, and its "
        "ONNX Runtime threads are sized to it, instead of N replicas each starting a thread per core)",
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="runtime view, logs, haproxy.cfg (default: temp)")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds a replica may take to be ready")
    parser.set_defaults(func=run_replicas)


def _edge_settings(args: argparse.Namespace) -> EdgeSettings:
    """The load balancer's typed settings from the flags (the API key from the environment)."""
    from pydantic import ValidationError

    from attnserve.errors import UserInputError, validation_summary
    from attnserve.serving.haproxy import API_KEY_MIN_LENGTH, EdgeSettings, api_key_problem

    api_key = os.environ.get(API_KEY_FROM_ENV) if args.require_api_key else None
    if args.require_api_key and not api_key:
        raise UserInputError(
            f"--require-api-key needs the key in ${API_KEY_FROM_ENV} (at least {API_KEY_MIN_LENGTH} characters)"
        )
    problem = api_key_problem(api_key) if api_key else None
    if problem is not None:
        raise UserInputError(f"--require-api-key: ${API_KEY_FROM_ENV}: {problem}")
    try:
        return EdgeSettings(
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            maxconn_per_replica=args.maxconn,
            queue_timeout_ms=args.queue_timeout_ms,
            buffer_kb=args.buffer_kb,
            tls_certificate=args.tls_cert,
            api_key=api_key,
        )
    except ValidationError as exc:
        raise UserInputError(f"invalid replica-set settings: {validation_summary(exc)}") from exc


def run_replicas(args: argparse.Namespace) -> int:
    from attnserve.errors import UserInputError
    from attnserve.serving.replicas import ReplicaOptions, ReplicaSet
    from attnserve.serving.runtime_view import build_runtime_repository

    edge = _edge_settings(args)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="attnserve-replicas-"))
    models = [name.strip() for name in args.models.split(",") if name.strip()] if args.models else None
    view, loaded, skipped = build_runtime_repository(args.repository, work_dir / "runtime", models)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if not loaded:
        raise UserInputError(f"nothing the CPU server can load in {args.repository}: run `attnserve export NAME` first")
    replica_set = ReplicaSet(
        view,
        edge,
        replicas=args.replicas,
        models=loaded,
        work_dir=work_dir,
        options=ReplicaOptions(ready_timeout_s=args.ready_timeout, pin_cpus=not args.no_pin_cpus),
    )

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        replica_set.start()
        scheme = "https" if edge.tls else "http"
        print(f"{args.replicas} replicas READY in {time.monotonic() - started:.1f} s behind HAProxy:")
        print(
            f"  HTTP  {scheme}://{replica_set.http_url}\n  gRPC  {replica_set.grpc_url}{' (TLS)' if edge.tls else ''}"
        )
        for i, server in enumerate(replica_set.servers):
            print(f"  replica {i}: http {server.http_url}, grpc {server.grpc_url}, metrics {server.metrics_url}")
        print(f"  config {replica_set.config_path}\n  admin token in {replica_set.servers[0].work_dir / 'admin_token'}")
        print("Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping HAProxy and the replicas...", file=sys.stderr)
        return 0
    finally:
        replica_set.stop()
