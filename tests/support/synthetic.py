"""Synthetic image models for tests that need a real Triton quickly: specs and small ONNX graphs (no torch export).

The ONNX models are built with `onnx.helper` (so a battery starts in seconds) and are served by the serving
package's ONNX Runtime runner like every real export:
- `linear_onnx`: logits = (pixels/255 - 0.5) @ W + b, cheap (fault tests, correctness checks);
- `heavy_onnx`: the same head after `depth` shared 512x512 MatMul+Tanh layers on a (T, 512) view of the input,
  a few ms per sample on these cores, so a burst of requests really overloads one instance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from attnserve.spec import ExportSection, IoSection, ModelSpec, ServingSection

SYNTHETIC_LABELS = ("alpha", "beta", "gamma", "delta")


def image_spec(
    name: str,
    arch: str,
    input_shape: tuple[int, ...],
    serving: ServingSection | None = None,
    labels: tuple[str, ...] = SYNTHETIC_LABELS,
) -> ModelSpec:
    """An NCHW image spec at opset 17, mean/std 0.5 per channel, served as `serving` says (default: the defaults)."""
    channels = input_shape[0]
    io = IoSection(layout="NCHW", input_shape=input_shape, mean=(0.5,) * channels, std=(0.5,) * channels, labels=labels)
    return ModelSpec(
        name=name, arch=arch, kind="image", io=io, serving=serving or ServingSection(), export=ExportSection(opset=17)
    )


def light_spec(name: str, input_shape: tuple[int, ...] = (3, 8, 8), **serving: Any) -> ModelSpec:
    """The spec of a `linear_onnx` model: batches up to 8 (preferred 4, 8), 0.5 ms queue delay, unless `serving`
    (fields of the serving section) says otherwise."""
    batching = ServingSection(max_batch_size=8, preferred_batch_sizes=(4, 8), max_queue_delay_us=500)
    return image_spec(name, "synthetic_linear", input_shape, batching.replace(**serving))


def heavy_spec(name: str, input_shape: tuple[int, ...], **serving: Any) -> ModelSpec:
    """The spec of a `heavy_onnx` model: batches up to 4 (preferred 4), 1 ms queue delay, unless `serving`
    (fields of the serving section) says otherwise."""
    batching = ServingSection(max_batch_size=4, preferred_batch_sizes=(4,), max_queue_delay_us=1_000)
    return image_spec(name, "synthetic_heavy", input_shape, batching.replace(**serving))


def _head(rng: np.random.Generator, features: int, num_classes: int) -> list[onnx.TensorProto]:
    weight = rng.normal(0, 0.3, (features, num_classes)).astype(np.float32)
    bias = rng.normal(0, 0.1, (num_classes,)).astype(np.float32)
    return [numpy_helper.from_array(weight, "head_weight"), numpy_helper.from_array(bias, "head_bias")]


def _save(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    sample_shape: tuple[int, ...],
    num_classes: int,
    path: Path,
) -> Path:
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", *sample_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _normalise(features: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    initializers = [
        numpy_helper.from_array(np.array([0, features], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
    ]
    nodes = [
        helper.make_node("Cast", ["pixels"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["as_float", "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "half"], ["centred"]),
        helper.make_node("Reshape", ["centred", "flat_shape"], ["flat"]),  # (N, features)
    ]
    return nodes, initializers


def linear_onnx(path: Path, sample_shape: tuple[int, ...], num_classes: int, seed: int = 0) -> Path:
    """A linear classifier on uint8 pixels (see module docstring)."""
    features = int(np.prod(sample_shape))
    nodes, initializers = _normalise(features)
    initializers += _head(np.random.default_rng(seed), features, num_classes)
    nodes += [
        helper.make_node("MatMul", ["flat", "head_weight"], ["product"]),
        helper.make_node("Add", ["product", "head_bias"], ["logits"]),
    ]
    return _save(nodes, initializers, sample_shape, num_classes, path)


def heavy_onnx(path: Path, sample_shape: tuple[int, ...], num_classes: int, depth: int = 24, seed: int = 0) -> Path:
    """A compute-bound classifier: `depth` x (MatMul 512x512 + Tanh) on a (64, 512) view of the sample."""
    features = int(np.prod(sample_shape))
    if features % 512:
        raise ValueError(f"heavy_onnx needs a sample of a multiple of 512 elements, got {sample_shape}")
    rng = np.random.default_rng(seed)
    nodes, initializers = _normalise(features)
    initializers += [
        numpy_helper.from_array(np.array([0, features // 512, 512], dtype=np.int64), "token_shape"),
        numpy_helper.from_array((rng.normal(0, 1, (512, 512)) / np.sqrt(512)).astype(np.float32), "mix"),
        *_head(rng, 512, num_classes),
    ]
    nodes.append(helper.make_node("Reshape", ["centred", "token_shape"], ["h0"]))  # (N, T, 512)
    for layer in range(depth):
        nodes += [
            helper.make_node("MatMul", [f"h{layer}", "mix"], [f"m{layer}"]),
            helper.make_node("Tanh", [f"m{layer}"], [f"h{layer + 1}"]),
        ]
    nodes += [
        helper.make_node("ReduceMean", [f"h{depth}"], ["pooled"], axes=[1], keepdims=0),  # (N, 512)
        helper.make_node("MatMul", ["pooled", "head_weight"], ["product"]),
        helper.make_node("Add", ["product", "head_bias"], ["logits"]),
    ]
    return _save(nodes, initializers, sample_shape, num_classes, path)


def reference_logits(onnx_path: Path, pixels: np.ndarray) -> np.ndarray:
    """The model's logits computed in-process by ONNX Runtime (the answer a server must give)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"pixels": pixels})[0]
