"""Helpers of the serving tests: a tiny ONNX classifier (onnx.helper, no torch) and encoded media made in code."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from support.synthetic import image_spec

from attnserve.repository.config import ModelConfig
from attnserve.spec import ModelSpec, ServingSection

TINY_SHAPE = (3, 8, 8)
TINY_LABELS = ("red", "green", "blue")


def tiny_spec(name: str = "tiny") -> ModelSpec:
    """The spec of `write_tiny_onnx`'s classifier (two instances, a bounded queue)."""
    serving = ServingSection(
        max_batch_size=8,
        preferred_batch_sizes=(4, 8),
        max_queue_delay_us=1000,
        max_queue_size=256,
        queue_timeout_us=2_000_000,
        instance_count=2,
    )
    return image_spec(name, "tiny_linear", TINY_SHAPE, serving, labels=TINY_LABELS)


def write_tiny_onnx(path: Path, seed: int = 0) -> Path:
    """logits (B, 3) = flatten(pixels / 255) @ W + b: a real ONNX graph with a symbolic batch."""
    rng = np.random.default_rng(seed)
    features = int(np.prod(TINY_SHAPE))
    initializers = [
        numpy_helper.from_array(rng.normal(0, 0.3, (features, len(TINY_LABELS))).astype(np.float32), "weight"),
        numpy_helper.from_array(rng.normal(0, 0.1, (len(TINY_LABELS),)).astype(np.float32), "bias"),
        numpy_helper.from_array(np.array([0, features], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Cast", ["pixels"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["as_float", "scale"], ["scaled"]),
        helper.make_node("Reshape", ["scaled", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", *TINY_SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(TINY_LABELS)])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def image_model_of(triton_server) -> str:
    """A ViT of the shared server (a real attention graph), else whatever image model it serves."""
    names = sorted(triton_server.specs, key=lambda name: (not name.startswith("vit"), name))
    return next(name for name in names if triton_server.specs[name].kind == "image")


@contextmanager
def extra_entry(
    triton_server,
    work_dir: Path,
    name: str,
    change: Callable[[ModelConfig], ModelConfig],
) -> Iterator[str]:
    """Serve one more entry on the shared server: the image model's exported ONNX under `name`, its config
    changed by `change`, turned into a runner entry by the runtime view, loaded through the admin API, and
    unloaded (waiting until Triton has finished) and removed afterwards."""
    import tritonclient.http as http

    from attnserve.repository.entries import add_model, model_config_for
    from attnserve.serving.runtime_view import build_runtime_repository

    source = image_model_of(triton_server)
    spec = triton_server.specs[source]
    add_model(work_dir / "repo", change(model_config_for(spec, name=name)), triton_server.onnx_paths[source], spec=spec)
    view, loaded, _ = build_runtime_repository(work_dir / "repo", work_dir / "work")
    assert loaded == [name]
    target = Path(triton_server.runtime_repository) / name
    shutil.copytree(view / name, target)
    client = http.InferenceServerClient(triton_server.http_url)
    headers = triton_server.server.admin_headers
    try:
        client.load_model(name, headers=headers)
        yield name
    finally:
        try:
            client.unload_model(name, headers=headers)
            _wait_unloaded(client, name, headers)
        finally:
            shutil.rmtree(target, ignore_errors=True)
            client.close()


def _wait_unloaded(client, name: str, headers: dict[str, str], timeout_s: float = 60.0) -> None:
    """Triton unloads in the background after answering the request: the next test of the shared server must
    not see the entry half-unloaded (server not ready)."""
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = {m["name"]: m.get("state") for m in client.get_model_repository_index(headers=headers)}.get(name)
        if state != "UNLOADING" and client.is_server_ready():
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} still unloading after {timeout_s} s: {state}")
