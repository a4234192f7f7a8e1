"""One real Triton server for the client tests, serving tiny models written through the export writer.

Models (all tiny so the suite stays fast on 2 cores):
- `tiny`: uint8 pixels (N,3,8,8) -> logits (N,4), a fixed random linear layer (ONNX built with onnx.helper);
- `tiny_explain`: the same plus `attention_map` (N,8,8);
- `tiny_video`: uint8 (N,2,3,8,8) -> logits (N,3);
- `identity` / `identity_nobatch`: python-backend identity (bench.identity_model), batching on / off.
ONNX entries are served by the serving package's ONNX Runtime runner (runtime view), exactly like real exports.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from attnserve.spec import ModelSpec

IMAGE_SHAPE = (3, 8, 8)
VIDEO_SHAPE = (2, 3, 8, 8)
IMAGE_LABELS = ("cat", "dog", "bird", "fish")
VIDEO_LABELS = ("left", "right", "still")


@dataclass(frozen=True)
class ClientServer:
    """What the client tests need: endpoints, the ONNX files (for in-process parity) and the specs."""

    http_url: str
    grpc_url: str
    admin_token: str
    onnx_paths: dict[str, Path]
    specs: dict[str, ModelSpec]
    server: object


def tiny_onnx(path: Path, sample_shape: tuple[int, ...], num_classes: int, seed: int, explain: bool = False) -> Path:
    """A linear classifier on uint8 pixels: logits = (pixels/255 - 0.5) @ W + b (+ a softmax 'attention' map)."""
    rng = np.random.default_rng(seed)
    features = int(np.prod(sample_shape))
    weight = rng.normal(0, 0.3, (features, num_classes)).astype(np.float32)
    bias = rng.normal(0, 0.1, (num_classes,)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.array([0, features], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
    ]
    nodes = [
        helper.make_node("Cast", ["pixels"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["as_float", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "half"], ["centred"]),
        helper.make_node("Reshape", ["centred", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["logits"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes])]
    if explain:  # softmax over the 8x8 positions of the channel-mean image, shape (N, 8, 8)
        height, width = sample_shape[-2:]
        initializers.append(numpy_helper.from_array(np.array([0, height * width], dtype=np.int64), "hw_shape"))
        initializers.append(numpy_helper.from_array(np.array([0, height, width], dtype=np.int64), "map_shape"))
        nodes += [
            helper.make_node("ReduceMean", ["centred"], ["channel_mean"], axes=[1], keepdims=0),
            helper.make_node("Reshape", ["channel_mean", "hw_shape"], ["positions"]),
            helper.make_node("Softmax", ["positions"], ["weights"], axis=-1),
            helper.make_node("Reshape", ["weights", "map_shape"], ["attention_map"]),
        ]
        outputs.append(helper.make_tensor_value_info("attention_map", TensorProto.FLOAT, ["batch", height, width]))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", *sample_shape])],
        outputs, initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def tiny_specs() -> dict[str, ModelSpec]:
    image = ModelSpec(
        name="tiny", arch="tiny_linear", kind="image", layout="NCHW", input_shape=IMAGE_SHAPE,
        mean=(0.5,) * 3, std=(0.5,) * 3, labels=IMAGE_LABELS, max_batch_size=8, preferred_batch_sizes=(4, 8),
        max_queue_delay_us=500, opset=17,
    )
    video = ModelSpec(
        name="tiny_video", arch="tiny_linear", kind="video", layout="NTCHW", input_shape=VIDEO_SHAPE,
        mean=(0.5,) * 3, std=(0.5,) * 3, labels=VIDEO_LABELS, max_batch_size=4, preferred_batch_sizes=(4,),
        max_queue_delay_us=500, opset=17,
    )
    return {"tiny": image, "tiny_video": video}


@pytest.fixture(scope="session")
def client_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientServer]:
    """Start the real Triton (serving.server.TritonServer) on free loopback ports with the tiny models."""
    from attnserve.export.repository import write_explain_entry, write_model_entry
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.serving.server import TritonServer
    from bench.identity_model import write_identity_model

    root = tmp_path_factory.mktemp("client_server")
    source = root / "repository"
    specs = tiny_specs()
    onnx_paths = {
        "tiny": tiny_onnx(root / "tiny.onnx", IMAGE_SHAPE, len(IMAGE_LABELS), seed=1),
        "tiny_explain": tiny_onnx(root / "tiny_explain.onnx", IMAGE_SHAPE, len(IMAGE_LABELS), seed=1, explain=True),
        "tiny_video": tiny_onnx(root / "tiny_video.onnx", VIDEO_SHAPE, len(VIDEO_LABELS), seed=2),
    }
    write_model_entry(specs["tiny"], onnx_paths["tiny"], source)
    write_explain_entry(specs["tiny"], onnx_paths["tiny_explain"], source, attention_dims=IMAGE_SHAPE[-2:])
    write_model_entry(specs["tiny_video"], onnx_paths["tiny_video"], source)
    write_identity_model(source, "identity")
    write_identity_model(source, "identity_nobatch", dynamic_batching=False)
    view, loaded, _skipped = build_runtime_repository(source, root / "runtime")
    with TritonServer(view, models=loaded, http_port=0, grpc_port=0, metrics_port=0,
                      work_dir=root / "server") as server:
        yield ClientServer(
            http_url=server.http_url, grpc_url=server.grpc_url, admin_token=server.admin_token,
            onnx_paths=onnx_paths, specs=specs, server=server,
        )
