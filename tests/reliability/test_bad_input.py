"""Bad-input battery over every model and ensemble of the shared server (`triton_server`).

Every model Triton loaded is described from the server itself (config + metadata), then sent: a wrong input name,
a wrong dtype (float32 holding NaN/Inf where uint8 is expected), a wrong rank, a wrong shape, a batch above
`max_batch_size`, an empty batch, and an unknown model / version; the pipelines are sent truncated, corrupt,
zero-byte, unsupported, oversized and decompression-bomb payloads. Each must be refused with Triton's status
(400 / INVALID_ARGUMENT, 404 / NOT_FOUND) and a message naming what was expected and what arrived (Triton's
own wording where it writes the message). Afterwards, correct requests still give the in-process answer and the
server log shows no crashed stub.

No model accepts floats: every input is uint8 pixels or encoded bytes (checked below), so NaN/Inf can only be
sent as a wrong dtype, which Triton refuses before any model sees it.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from support.media import png_declaring
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.triton

PROTOCOLS = ("http", "grpc")
INVALID = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}
NOT_FOUND = {"http": "404", "grpc": "StatusCode.NOT_FOUND"}
CRASH_SIGNS = (
    "Segmentation fault",
    "Signal (11)",
    "Signal (6)",
    "core dumped",
    "is not healthy",
    "Stub process",
    "Traceback (most recent call last)",
    "Aborted",
)
TRITON_TYPES = {"TYPE_UINT8": "UINT8", "TYPE_STRING": "BYTES", "TYPE_FP32": "FP32"}


@dataclass(frozen=True)
class Served:
    """One served model as the server describes it (first input only: every model here has one)."""

    name: str
    max_batch_size: int
    input_name: str
    datatype: str  # tritonclient name: UINT8 | BYTES
    dims: tuple[int, ...]
    platform: str


def _served_models(triton_server: Any) -> list[Served]:
    client = httpclient.InferenceServerClient(triton_server.http_url)
    try:
        found = []
        for name in triton_server.loaded:
            config = client.get_model_config(name)
            inputs = [i for i in config["input"] if not i.get("optional")]  # NAME_timeline's options may be left out
            assert len(inputs) == 1, (
                f"{name}: the battery expects one required input, got {[i['name'] for i in inputs]}"
            )
            found.append(
                Served(
                    name,
                    int(config.get("max_batch_size", 0)),
                    inputs[0]["name"],
                    TRITON_TYPES.get(inputs[0]["data_type"], inputs[0]["data_type"]),
                    tuple(int(d) for d in inputs[0]["dims"]),
                    config.get("platform") or config["backend"],
                )
            )
        return found
    finally:
        client.close()


@pytest.fixture(scope="module")
def served(triton_server: Any) -> list[Served]:
    models = _served_models(triton_server)
    assert any(m.datatype == "BYTES" for m in models) and any(m.datatype == "UINT8" for m in models)
    return models


def _module(protocol: str) -> Any:
    return httpclient if protocol == "http" else grpcclient


def _client(triton_server: Any, protocol: str) -> Any:
    module = _module(protocol)
    return module.InferenceServerClient(triton_server.http_url if protocol == "http" else triton_server.grpc_url)


def _tensor(module: Any, name: str, array: np.ndarray, datatype: str) -> Any:
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _valid_array(model: Served, batch: int) -> np.ndarray:
    if model.datatype == "BYTES":
        return np.array([[b"x"]] * batch, dtype=np.object_).reshape(batch, *model.dims)
    return np.zeros((batch, *model.dims), dtype=np.uint8)


def _refusal(client: Any, model: str, inputs: list[Any], version: str = "") -> InferenceServerException:
    with pytest.raises(InferenceServerException) as refused:
        client.infer(model, inputs, model_version=version)
    return refused.value


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(triton_server: Any, protocol: str) -> Iterator[Any]:
    connection = _client(triton_server, protocol)
    yield connection
    connection.close()


def test_no_model_takes_floats(served: list[Served]) -> None:
    """NaN/Inf need a float input; there is none: pixels are uint8, pipeline payloads are bytes."""
    assert {m.datatype for m in served} <= {"UINT8", "BYTES"}, {m.name: m.datatype for m in served}


def test_wrong_input_name(served: list[Served], client: Any, protocol: str) -> None:
    module = _module(protocol)
    for model in served:
        error = _refusal(
            client, model.name, [_tensor(module, "not_" + model.input_name, _valid_array(model, 1), model.datatype)]
        )
        assert error.status() == INVALID[protocol], (model.name, error)
        # Triton names the unexpected input and the model (not the expected name: metadata gives that)
        assert f"unexpected inference input 'not_{model.input_name}' for model '{model.name}'" in error.message()


def test_wrong_dtype_float_nan_inf(served: list[Served], client: Any, protocol: str) -> None:
    module = _module(protocol)
    for model in served:
        floats = np.full((1, *model.dims), np.nan, dtype=np.float32)
        floats.reshape(-1)[::2] = np.inf
        error = _refusal(client, model.name, [_tensor(module, model.input_name, floats, "FP32")])
        assert error.status() == INVALID[protocol], (model.name, error)
        assert f"data-type is 'FP32', but model '{model.name}' expects '{model.datatype}'" in error.message()


def test_wrong_rank_and_shape(served: list[Served], client: Any, protocol: str) -> None:
    module = _module(protocol)
    for model in served:
        for dims in (model.dims[:-1] or (2, 2), (*model.dims[:-1], model.dims[-1] + 1), (*model.dims, 1)):
            array = (
                np.zeros((1, *dims), dtype=np.uint8)
                if model.datatype == "UINT8"
                else np.array([b"x"] * int(np.prod(dims)), dtype=np.object_).reshape(1, *dims)
            )
            error = _refusal(client, model.name, [_tensor(module, model.input_name, array, model.datatype)])
            assert error.status() == INVALID[protocol], (model.name, dims, error)
            expected = "[" + ",".join(str(d) for d in (-1, *model.dims)) + "]"
            received = "[" + ",".join(str(d) for d in (1, *dims)) + "]"
            assert f"unexpected shape for input '{model.input_name}' for model '{model.name}'" in error.message()
            assert f"Expected {expected}, got {received}" in error.message(), error.message()


def test_batch_above_max_batch_size(served: list[Served], client: Any, protocol: str) -> None:
    module = _module(protocol)
    for model in served:
        array = _valid_array(model, model.max_batch_size + 1)
        error = _refusal(client, model.name, [_tensor(module, model.input_name, array, model.datatype)])
        assert error.status() == INVALID[protocol], (model.name, error)
        assert f"batch-size must be <= {model.max_batch_size} for '{model.name}'" in error.message()


def test_empty_batch(served: list[Served], client: Any, protocol: str) -> None:
    """Batch 0: Triton refuses it, in its own words (a byte-size mismatch, not 'empty batch')."""
    module = _module(protocol)
    for model in served:
        array = _valid_array(model, 0)
        error = _refusal(client, model.name, [_tensor(module, model.input_name, array, model.datatype)])
        assert error.status() == INVALID[protocol], (model.name, error)
        assert model.input_name in error.message() and model.name in error.message(), error.message()


def test_unknown_model_and_version(served: list[Served], client: Any, protocol: str) -> None:
    module = _module(protocol)
    model = next(m for m in served if m.datatype == "UINT8")
    inputs = [_tensor(module, model.input_name, _valid_array(model, 1), model.datatype)]
    error = _refusal(client, "no_such_model", inputs)
    assert error.status() == NOT_FOUND[protocol] and "unknown model: 'no_such_model'" in error.message(), error
    error = _refusal(client, model.name, inputs, version="99")
    assert error.status() == NOT_FOUND[protocol], error
    assert f"'{model.name}' version 99 is not found" in error.message(), error.message()


# --------------------------------------------------------------------------------------------------------
# oversized bodies
# --------------------------------------------------------------------------------------------------------
def test_oversized_http_body_is_refused(served: list[Served], triton_server: Any) -> None:
    """A 64 MiB body behind a header that declares one sample: refused with 400 (Triton reads it all first)."""
    model = next(m for m in served if m.datatype == "UINT8")
    sample_bytes = int(np.prod(model.dims))
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": model.input_name,
                    "shape": [1, *model.dims],
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": sample_bytes},
                }
            ]
        }
    ).encode()
    body = header + bytes(64 << 20)
    request = urllib.request.Request(
        f"http://{triton_server.http_url}/v2/models/{model.name}/infer",
        data=body,
        method="POST",
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 400
    assert f"unexpected additional input data for model '{model.name}'" in refused.value.read().decode()


def test_oversized_tensor_is_refused(served: list[Served], client: Any, protocol: str) -> None:
    """A 16 MiB tensor where a few KiB are expected: a shape error naming both shapes."""
    module = _module(protocol)
    model = next(m for m in served if m.datatype == "UINT8")
    array = np.zeros((1, 16 << 20), dtype=np.uint8)
    error = _refusal(client, model.name, [_tensor(module, model.input_name, array, "UINT8")])
    assert error.status() == INVALID[protocol]
    assert f"got [1,{16 << 20}]" in error.message(), error.message()


# --------------------------------------------------------------------------------------------------------
# encoded payloads to the pipelines
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def samples(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One real encoded sample per deployable (PNG for images, H.264 MP4 for videos)."""
    from attnserve.models.data import write_samples

    out_dir = tmp_path_factory.mktemp("battery_samples")
    return {name: write_samples(name, out_dir / name, 1)[0].read_bytes() for name in triton_server.specs}


def _pipelines(triton_server: Any) -> list[tuple[str, Any]]:
    return [
        (spec.pipeline_name, spec)
        for spec in triton_server.specs.values()
        if spec.pipeline_name in triton_server.loaded
    ]


def _bad_payloads(kind: str, good: bytes) -> dict[str, tuple[bytes, str]]:
    """name -> (payload, a fragment the refusal must contain)."""
    payloads = {
        "zero_byte": (b"", f"empty {kind} payload"),
        "truncated": (good[: len(good) // 2], f"cannot decode {kind}"),
        "corrupt": (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), f"cannot decode {kind}"),
    }
    if kind == "image":
        gif = io.BytesIO()
        Image.new("RGB", (8, 8)).save(gif, "GIF")
        payloads["unsupported_gif"] = (gif.getvalue(), "unsupported image format 'GIF'")
        payloads["huge_declared_8k"] = (png_declaring(8000, 8000), "exceeds the limit")
        payloads["bomb_declared_20k"] = (png_declaring(20000, 20000), "decompression bomb")
    else:
        payloads["png_as_video_truncated"] = (png_declaring(8, 8)[:20], "is a still image (png_pipe), not a video")
    return payloads


def _send_payload(client: Any, protocol: str, pipeline: str, input_name: str, payload: bytes) -> Any:
    module = _module(protocol)
    array = np.array([[payload]], dtype=np.object_)
    return client.infer(pipeline, [_tensor(module, input_name, array, "BYTES")])


def test_bad_payloads_are_refused_per_request(
    triton_server: Any, samples: dict[str, bytes], client: Any, protocol: str
) -> None:
    from attnserve.serving.pipelines import pipeline_input_name

    pipelines = _pipelines(triton_server)
    assert pipelines, "the shared server serves no pipeline"
    for pipeline, spec in pipelines:
        input_name = pipeline_input_name(spec)
        for case, (payload, fragment) in _bad_payloads(spec.kind, samples[spec.name]).items():
            with pytest.raises(InferenceServerException) as refused:
                _send_payload(client, protocol, pipeline, input_name, payload)
            message = refused.value.message() or ""
            assert fragment in message, f"{pipeline} {case}: expected {fragment!r} in {message!r}"
            assert f"{input_name}: " in message and "\nAt:" not in message, f"{pipeline} {case}: {message!r}"
            assert refused.value.status() == INVALID[protocol], (pipeline, case, refused.value)


def test_payload_above_the_limit_is_refused(triton_server: Any, samples: dict[str, bytes]) -> None:
    """A payload larger than the pre-processor's limit (64 MiB) is refused by size, not decoded."""
    from attnserve.preprocessing import MAX_PAYLOAD_BYTES
    from attnserve.serving.pipelines import pipeline_input_name

    pipeline, spec = _pipelines(triton_server)[0]
    client = _client(triton_server, "grpc")
    try:
        payload = samples[spec.name] + bytes(MAX_PAYLOAD_BYTES + 1 - len(samples[spec.name]))
        with pytest.raises(InferenceServerException) as refused:
            _send_payload(client, "grpc", pipeline, pipeline_input_name(spec), payload)
        assert f"exceeds the limit of {MAX_PAYLOAD_BYTES}" in (refused.value.message() or ""), refused.value
    finally:
        client.close()


def test_bad_payload_does_not_fail_its_batch_neighbours(triton_server: Any, samples: dict[str, bytes]) -> None:
    """Good and bad payloads sent concurrently (batched together by Triton): the good ones still get answers."""
    from concurrent.futures import ThreadPoolExecutor

    from attnserve.serving.pipelines import pipeline_input_name

    pipeline, spec = next((p, s) for p, s in _pipelines(triton_server) if s.kind == "image")
    input_name = pipeline_input_name(spec)
    bad = [payload for payload, _ in _bad_payloads("image", samples[spec.name]).values()]
    jobs = [samples[spec.name]] * 8 + bad * 2

    def send(payload: bytes) -> bool:
        client = _client(triton_server, "http")
        try:
            _send_payload(client, "http", pipeline, input_name, payload)
            return True
        except InferenceServerException:
            return False
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        outcomes = list(pool.map(send, jobs))
    assert outcomes[:8] == [True] * 8, f"good payloads failed next to bad ones: {outcomes}"
    assert not any(outcomes[8:]), outcomes


# --------------------------------------------------------------------------------------------------------
# after the battery
# --------------------------------------------------------------------------------------------------------
def _reference_logits(onnx_path: Path, pixels: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"pixels": pixels})[0]


def test_server_still_correct_after_the_battery(
    triton_server: Any, served: list[Served], samples: dict[str, bytes]
) -> None:
    """Runs last in this module: every model is READY, gives the in-process answer, and the log shows no crash."""
    from attnserve.serving.pipelines import pipeline_input_name, preprocess_target
    from attnserve.serving.python_models.preprocess import decode

    client = _client(triton_server, "grpc")
    try:
        assert client.is_server_live() and client.is_server_ready()
        for model in served:
            assert client.is_model_ready(model.name), model.name
        rng = np.random.default_rng(11)
        for name, spec in triton_server.specs.items():
            pixels = rng.integers(0, 256, (3, *spec.io.input_shape), dtype=np.uint8)
            result = client.infer(name, [_tensor(grpcclient, "pixels", pixels, "UINT8")])
            expected = _reference_logits(triton_server.onnx_paths[name], pixels)
            np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-3, atol=spec.export.atol)
            if spec.pipeline_name in triton_server.loaded:
                result = _send_payload(client, "grpc", spec.pipeline_name, pipeline_input_name(spec), samples[name])
                decoded = decode(samples[name], preprocess_target(spec))[None]
                np.testing.assert_allclose(
                    result.as_numpy("logits"),
                    _reference_logits(triton_server.onnx_paths[name], decoded),
                    rtol=1e-3,
                    atol=spec.export.atol,
                )
    finally:
        client.close()
    log_text = triton_server.server.log_path.read_text(errors="replace")
    crashes = [line for line in log_text.splitlines() if any(sign in line for sign in CRASH_SIGNS)]
    assert not crashes, "the server log shows a crash:\n" + "\n".join(crashes[:20])
