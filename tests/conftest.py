"""Session-wide fixtures shared by every package's tests.

`triton_server`: ONE real Triton server (NVIDIA's binary from the nvidia-pytriton wheel, `TritonServer`)
for every `triton`-marked test of the session. Its repository holds a tiny variant of one deployable per model family
(`FIXTURE_DEPLOYABLES`, exported through the export package), its `_explain` twin where the export writes one, and the
`_preprocess` / `_pipeline` entries; ONNX entries are served by the CPU runner of the runtime view.
It binds 127.0.0.1 on free ports and is stopped (no stray processes) at the end of the session.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from attnserve.spec import ModelSpec

logger = logging.getLogger(__name__)

FIXTURE_DEPLOYABLES = ("vit_shapes", "cnn_cbam_digits", "timesformer_motion")
"""One deployable per family (ViT on RGB, CNN+CBAM on grey, divided space-time video), tiny: exporting all of
them took 16-54 s on the shared 2 cores, too much for the suite; `bench/serve_ready.py` starts them all."""

SERVER_EXIT_TIMEOUT_S = 5
"""Shutdown grace at the end of the session: Triton also waits for idle keep-alive client connections."""


@dataclass(frozen=True)
class TritonFixture:
    """What `triton_server` yields.

    Attributes:
        http_url: `host:port` for tritonclient.http.
        grpc_url: `host:port` for tritonclient.grpc.
        metrics_url: full URL of the Prometheus page.
        admin_token: the token of the restricted APIs (header `attnserve-admin-token`).
        repository: the source repository (as the export writes it).
        runtime_repository: the CPU runtime view Triton actually loads.
        specs: deployable name -> its (tiny) ModelSpec.
        onnx_paths: entry name (`NAME`, `NAME_explain`) -> the ONNX file the server runs.
        loaded: every model name loaded at start-up.
        skipped: entries of the repository left out of the CPU view, with the reason.
        server: the `attnserve.serving.server.TritonServer` (log_tail(), admin headers, pid).
    """

    http_url: str
    grpc_url: str
    metrics_url: str
    admin_token: str
    repository: Path
    runtime_repository: Path
    specs: dict[str, ModelSpec]
    onnx_paths: dict[str, Path]
    loaded: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    server: object = None


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonFixture]:
    """One real Triton server for the session (see the module docstring)."""
    from support.deployables import build_deployables_repository
    from support.servers import local_server

    from attnserve.serving.runtime_view import build_runtime_repository

    root = tmp_path_factory.mktemp("triton_server")
    repository = root / "model_repository"
    specs, onnx_paths = build_deployables_repository(repository, FIXTURE_DEPLOYABLES, tiny=True)
    view, loaded, skipped = build_runtime_repository(repository, root / "runtime")
    server = local_server(view, loaded, root / "server", exit_timeout_s=SERVER_EXIT_TIMEOUT_S)
    with server:
        yield TritonFixture(
            http_url=server.http_url,
            grpc_url=server.grpc_url,
            metrics_url=server.metrics_url,
            admin_token=server.admin_token,
            repository=repository,
            runtime_repository=view,
            specs=specs,
            onnx_paths=onnx_paths,
            loaded=loaded,
            skipped=skipped,
            server=server,
        )
