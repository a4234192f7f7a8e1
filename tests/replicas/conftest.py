"""A real replica set for the tests: two embedded Triton servers behind a real HAProxy, scraped by a real Prometheus.

`replica_set` (module scope) serves two models written by the export's repository writer:
- `rep_light`: a linear classifier on (3, 8, 8) uint8 (fast: answers, balancing, SIGKILL runs);
- `rep_heavy`: compute-bound (`depth` x MatMul 512x512 + Tanh), batch <= 4, Triton's unbounded queue (overload).
HAProxy: at most 2 requests per replica, 5 ms queue timeout. Prometheus scrapes every replica's metrics port
each second from the start (so the idle value of the HPA's query is known before any load).

Under CI (`CI=true`) a missing `haproxy` / `prometheus` binary fails the tests instead of skipping them:
`.ci/run` installs both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support.binaries import require_binary
from support.synthetic import SYNTHETIC_LABELS as LABELS
from support.synthetic import heavy_onnx, heavy_spec, light_spec, linear_onnx, reference_logits

from attnserve.spec import ModelSpec

LIGHT_SHAPE = (3, 8, 8)
HEAVY_SHAPE = (1, 64, 256)  # 16384 uint8 = a (32, 512) token view
HEAVY_DEPTH = 24
MAXCONN_PER_REPLICA = 2
QUEUE_TIMEOUT_MS = 5


def replica_specs() -> dict[str, ModelSpec]:
    """`rep_light` and `rep_heavy` (Triton's unbounded queue: the edge's admission control is under test)."""
    return {"rep_light": light_spec("rep_light", LIGHT_SHAPE), "rep_heavy": heavy_spec("rep_heavy", HEAVY_SHAPE)}


@dataclass
class ReplicaRepository:
    """The CPU runtime view both replica sets serve, and the ONNX files behind it."""

    view: Path
    source: Path
    specs: dict[str, ModelSpec]
    onnx_paths: dict[str, Path]

    def reference(self, model: str, pixels: np.ndarray) -> np.ndarray:
        """Logits computed in-process by ONNX Runtime."""
        return reference_logits(self.onnx_paths[model], pixels)


@pytest.fixture(scope="session")
def replica_repository(tmp_path_factory: pytest.TempPathFactory) -> ReplicaRepository:
    from attnserve.repository.entries import write_model_entry
    from attnserve.serving.runtime_view import build_runtime_repository

    root = tmp_path_factory.mktemp("replicas")
    specs = replica_specs()
    onnx_paths = {
        "rep_light": linear_onnx(root / "rep_light.onnx", LIGHT_SHAPE, len(LABELS), seed=5),
        "rep_heavy": heavy_onnx(root / "rep_heavy.onnx", HEAVY_SHAPE, len(LABELS), depth=HEAVY_DEPTH, seed=6),
    }
    for name, spec in specs.items():
        write_model_entry(spec, onnx_paths[name], root / "repository")
    view, loaded, skipped = build_runtime_repository(root / "repository", root / "runtime")
    assert sorted(loaded) == sorted(specs), f"runtime view left out {skipped}"
    return ReplicaRepository(view=view, source=root / "repository", specs=specs, onnx_paths=onnx_paths)


@pytest.fixture(scope="module")
def replica_set(replica_repository: ReplicaRepository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Two replicas behind HAProxy (cleartext, no key), restarted when killed."""
    from attnserve.serving.haproxy import EdgeSettings
    from attnserve.serving.replicas import ReplicaOptions, ReplicaSet

    require_binary("haproxy", "haproxy")
    edge = EdgeSettings(
        http_port=0, grpc_port=0, maxconn_per_replica=MAXCONN_PER_REPLICA, queue_timeout_ms=QUEUE_TIMEOUT_MS
    )
    replica_set = ReplicaSet(
        replica_repository.view,
        edge,
        replicas=2,
        models=sorted(replica_repository.specs),
        work_dir=tmp_path_factory.mktemp("replica_set"),
        options=ReplicaOptions(ready_timeout_s=120),
    )
    with replica_set:
        for server in replica_set.servers:
            # The replicas run below the test's own priority: on 2 shared cores the load generator must not be
            # starved by the servers it measures (on a real deployment they are on other machines).
            os.setpriority(os.PRIO_PGRP, server.pid, 10)
        yield replica_set
