"""Facts read from an ONNX graph itself: op histogram, attention nodes, symbolic batch dimension."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

ATTENTION_OP_TYPES = frozenset({"Attention", "MultiHeadAttention", "PackedAttention", "QAttention"})
"""Standard ONNX `Attention` (opset 23) and ONNX Runtime's fused `com.microsoft` attention ops."""


def load_graph(onnx_model: onnx.ModelProto | Path | str, *, with_weights: bool = False) -> onnx.ModelProto:
    """Load a model (without external weights unless asked: the structure is enough for counting)."""
    if isinstance(onnx_model, onnx.ModelProto):
        return onnx_model
    return onnx.load(str(onnx_model), load_external_data=with_weights)


def _all_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    # Nodes of the main graph plus those inside local functions (the dynamo exporter may emit functions).
    nodes = list(model.graph.node)
    for function in model.functions:
        nodes.extend(function.node)
    return nodes


def op_histogram(onnx_model: onnx.ModelProto | Path | str) -> dict[str, int]:
    """Count of each op type (`domain::Op` for non-standard domains), most frequent first."""
    model = load_graph(onnx_model)
    counts = Counter(
        node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        for node in _all_nodes(model)
    )
    return dict(counts.most_common())


def count_attention_nodes(onnx_model: onnx.ModelProto | Path | str) -> int:
    """Number of fused attention nodes (ONNX `Attention`, ORT `com.microsoft` attention ops)."""
    model = load_graph(onnx_model)
    return sum(1 for node in _all_nodes(model) if node.op_type in ATTENTION_OP_TYPES)


def batch_dim_name(onnx_model: onnx.ModelProto | Path | str, input_index: int = 0) -> str | None:
    """The symbolic name of the first dim of graph input `input_index`, or None when it is fixed/unknown."""
    model = load_graph(onnx_model)
    dims = model.graph.input[input_index].type.tensor_type.shape.dim
    if not dims or dims[0].HasField("dim_value"):
        return None
    return dims[0].dim_param or None


def value_info_dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    """The dims of a graph input/output: ints where fixed, names where symbolic ('?' when unnamed)."""
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim
    ]
