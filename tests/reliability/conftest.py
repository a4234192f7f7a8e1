"""The reliability battery's own Triton server, so overload and fault injection never disturb the shared one.

`reliability_server` (session) serves, through the real runtime view and `TritonServer` on free loopback ports:
- `rel_heavy`: compute-bound (a few ms per sample), `max_batch_size` 4, a **small bounded queue**
  (`max_queue_size` 8, `queue_timeout_us` 250 ms, REJECT) written by the export's repository writer from the spec;
- `rel_heavy_unbounded`: the same model with an unbounded queue (0 = no limit, no timeout), the contrast;
- `rel_light`: a cheap linear model with the spec's default queue policy (fault tests, correctness);
- `rel_broken`: in the repository but not loaded at start-up; its ONNX file is corrupt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support.synthetic import SYNTHETIC_LABELS as LABELS
from support.synthetic import heavy_onnx, heavy_spec, light_spec, linear_onnx, reference_logits

from attnserve.spec import ModelSpec

HEAVY_SHAPE = (1, 128, 256)  # 32768 uint8 = a (64, 512) token view
LIGHT_SHAPE = (3, 8, 8)
HEAVY_DEPTH = 12


def reliability_specs() -> dict[str, ModelSpec]:
    """Specs of the battery's models (the queue policy of `rel_heavy` is the behaviour under test)."""
    heavy = heavy_spec("rel_heavy", HEAVY_SHAPE, max_queue_size=8, queue_timeout_us=250_000)
    light = light_spec("rel_light", LIGHT_SHAPE)
    broken = light.replace(name="rel_broken")
    unbounded = heavy.replace(name="rel_heavy_unbounded").with_serving(max_queue_size=0, queue_timeout_us=0)
    return {"rel_heavy": heavy, "rel_heavy_unbounded": unbounded, "rel_light": light, "rel_broken": broken}


@dataclass
class ReliabilityServer:
    """The running server, its repository and what the tests need to check answers in-process."""

    server: object  # attnserve.serving.server.TritonServer
    specs: dict[str, ModelSpec]
    onnx_paths: dict[str, Path]
    repository: Path

    @property
    def http_url(self) -> str:
        return self.server.http_url  # type: ignore[attr-defined]

    @property
    def grpc_url(self) -> str:
        return self.server.grpc_url  # type: ignore[attr-defined]

    @property
    def admin_headers(self) -> dict[str, str]:
        return self.server.admin_headers  # type: ignore[attr-defined]

    def reference(self, model: str, pixels: np.ndarray) -> np.ndarray:
        """The model's logits computed in-process by ONNX Runtime (the answer the server must give)."""
        return reference_logits(self.onnx_paths[model], pixels)


@pytest.fixture(scope="session")
def reliability_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReliabilityServer]:
    """Start a dedicated real Triton (serving's `TritonServer`) for overload and fault tests."""
    from support.servers import local_server

    from attnserve.repository.entries import write_model_entry
    from attnserve.serving.runtime_view import build_runtime_repository

    root = tmp_path_factory.mktemp("reliability")
    source = root / "repository"
    specs = reliability_specs()
    onnx_paths = {
        "rel_heavy": heavy_onnx(root / "rel_heavy.onnx", HEAVY_SHAPE, len(LABELS), depth=HEAVY_DEPTH, seed=3),
        "rel_light": linear_onnx(root / "rel_light.onnx", LIGHT_SHAPE, len(LABELS), seed=4),
    }
    corrupt = root / "rel_broken.onnx"
    corrupt.write_bytes(b"\x08\x07garbage: this is not an ONNX protobuf" * 8)
    for name, spec in specs.items():
        onnx_path = onnx_paths["rel_heavy"] if name == "rel_heavy_unbounded" else onnx_paths.get(name, corrupt)
        write_model_entry(spec, onnx_path, source)
    view, _loaded, _skipped = build_runtime_repository(source, root / "runtime")
    onnx_paths["rel_heavy_unbounded"] = onnx_paths["rel_heavy"]
    server = local_server(view, ["rel_heavy", "rel_heavy_unbounded", "rel_light"], root / "server")
    with server:
        yield ReliabilityServer(server=server, specs=specs, onnx_paths=onnx_paths, repository=view)
