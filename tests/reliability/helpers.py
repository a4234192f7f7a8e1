"""Helpers of the reliability battery: small real ONNX models and Linux process/socket inspection.

The ONNX models are built with `onnx.helper` (no torch export, so the battery starts in seconds) and are served by
the serving package's ONNX Runtime runner like every real export:
- `linear_onnx`: logits = (pixels/255 - 0.5) @ W + b, cheap (fault tests, correctness checks);
- `heavy_onnx`: the same head after `depth` shared 512x512 MatMul+Tanh layers on a (64, 512) view of the input,
  a few ms per sample on these cores, so a burst of requests really overloads one instance.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_TCP_LISTEN = "0A"


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


# --------------------------------------------------------------------------------------------------------
# processes and sockets (Linux /proc; psutil is not a dependency)
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    cmdline: tuple[str, ...]


def process_info(pid: int) -> ProcessInfo | None:
    """The parent pid and command line of `pid`, or None when it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw_cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    ppid = int(stat.rsplit(")", 1)[1].split()[1])
    return ProcessInfo(pid, ppid, tuple(part.decode(errors="replace") for part in raw_cmdline.split(b"\0") if part))


def descendants(root_pid: int) -> list[ProcessInfo]:
    """Every live process whose ancestry reaches `root_pid` (children, grandchildren, ...)."""
    infos = [
        info
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        if (info := process_info(int(entry.name))) is not None
    ]
    children: dict[int, list[ProcessInfo]] = {}
    for info in infos:
        children.setdefault(info.ppid, []).append(info)
    found: list[ProcessInfo] = []
    stack = [root_pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found


def stub_processes(server_pid: int, model: str) -> list[ProcessInfo]:
    """The python-backend stub processes serving `model` among the server's descendants.

    The stub's command line is `triton_python_backend_stub <model dir>/<version>/model.py <shm region> ...
    <instance name> ...`; the instance name is `<model>_<group>_<index>`.
    """
    stubs = []
    for info in descendants(server_pid):
        if not info.cmdline or not info.cmdline[0].endswith("triton_python_backend_stub"):
            continue
        if any(f"/{model}/" in part for part in info.cmdline[1:2]):
            stubs.append(info)
    return stubs


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _decode_address(hex_address: str) -> tuple[str, int]:
    host_hex, port_hex = hex_address.split(":")
    port = int(port_hex, 16)
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(host_hex, 16))), port
    words = struct.unpack("<4I", raw)  # IPv6: four little-endian 32-bit words
    return socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words)), port


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """`(address, port)` of every TCP socket in LISTEN state that process `pid` holds (IPv4 and IPv6)."""
    inodes = _socket_inodes(pid)
    found: set[tuple[str, int]] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _TCP_LISTEN and fields[9] in inodes:
                found.add(_decode_address(fields[1]))
    return found
