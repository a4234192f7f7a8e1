"""Against the session's real Triton server (`triton_server` fixture): every model READY, parity with
in-process ONNX Runtime over HTTP and gRPC, dynamic batching, pipelines, explain, restricted APIs."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from support.media import encoded_image, encoded_video
from tritonclient.utils import InferenceServerException

from attnserve.clients.loadtest import settled_reading
from attnserve.runtimes.onnxruntime_session import OnnxRuntimeSession
from attnserve.serving.pipelines import pipeline_input_name, preprocess_target
from attnserve.serving.python_models.preprocess import decode

pytestmark = pytest.mark.triton

IMAGE_MODEL = "vit_shapes"
VIDEO_MODEL = "timesformer_motion"


def _pixels(spec, batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, *spec.io.input_shape), dtype=np.uint8)


def _in_process(triton_server, entry: str, pixels: np.ndarray) -> dict[str, np.ndarray]:
    return OnnxRuntimeSession(triton_server.onnx_paths[entry], intra_op_threads=1).run({"pixels": pixels})


def _bytes_input(module, name: str, payloads: list[bytes]):
    array = np.array(payloads, dtype=np.object_).reshape(len(payloads), 1)
    tensor = module.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def test_every_model_of_the_repository_is_ready(triton_server) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_url)
    assert client.is_server_ready()
    for name in triton_server.loaded:
        assert client.is_model_ready(name), name
    for name, spec in triton_server.specs.items():
        for entry in (name, spec.explain_name, spec.preprocess_name, spec.pipeline_name):
            assert entry in triton_server.loaded
    index = client.get_model_repository_index(headers=triton_server.server.admin_headers)
    assert {m["name"] for m in index if m.get("state") == "READY"} == set(triton_server.loaded)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inference_matches_in_process_onnx_runtime(triton_server, protocol: str) -> None:
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(triton_server.http_url if protocol == "http" else triton_server.grpc_url)
    for name, spec in triton_server.specs.items():
        pixels = _pixels(spec, 3, seed=len(name))
        tensor = module.InferInput("pixels", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels)
        served = client.infer(name, [tensor]).as_numpy("logits")
        expected = _in_process(triton_server, name, pixels)["logits"]
        assert served.shape == (3, spec.num_classes) and served.dtype == np.float32
        assert np.abs(expected).max() > 1e-6  # not vacuous
        np.testing.assert_allclose(
            served, expected, rtol=spec.export.rtol, atol=spec.export.atol, err_msg=f"{name} over {protocol}"
        )


def test_concurrent_single_image_requests_are_batched(triton_server) -> None:
    name = "cnn_cbam_digits"
    spec = triton_server.specs[name]
    requests = 48
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)

    async def counts() -> tuple[int, int]:
        stats = (await asyncio.to_thread(client.get_inference_statistics, name)).model_stats[0]
        return int(stats.inference_count), int(stats.execution_count)

    # Triton counts a request after answering it, and earlier tests used this server: read settled counters
    # (the load tester's settle wait) before and after, or the delta misses requests (37 for 48 in CI)
    inferences_before, executions_before = asyncio.run(settled_reading(counts))
    finished = threading.Semaphore(0)
    results: list = []

    def on_result(result, error) -> None:
        results.append(error if error is not None else result.as_numpy("logits"))
        finished.release()

    for seed in range(requests):  # fired without waiting: they meet in Triton's queue
        tensor = grpcclient.InferInput("pixels", [1, *spec.io.input_shape], "UINT8")
        tensor.set_data_from_numpy(_pixels(spec, 1, seed))
        client.async_infer(name, [tensor], on_result)
    for _ in range(requests):
        assert finished.acquire(timeout=120)
    assert all(isinstance(r, np.ndarray) and r.shape == (1, spec.num_classes) for r in results), results[:3]
    inferences, executions = asyncio.run(
        settled_reading(counts, lambda after: after[0] - inferences_before >= requests, timeout_s=30.0)
    )
    assert inferences - inferences_before == requests
    assert executions - executions_before < requests, "Triton ran every request alone: no dynamic batching"
    client.close()


@pytest.mark.parametrize("name", [IMAGE_MODEL, "cnn_cbam_digits", VIDEO_MODEL])
def test_pipeline_returns_the_label_of_the_model_on_the_same_pixels(triton_server, name: str) -> None:
    spec = triton_server.specs[name]
    payload = encoded_video(frames=12, seed=5) if spec.kind == "video" else encoded_image(44, 60, seed=5)
    pixels = decode(payload, preprocess_target(spec))[None]  # (1, ...) as the preprocess model makes it
    expected_logits = _in_process(triton_server, name, pixels)["logits"][0]
    expected_label = spec.io.labels[int(np.argmax(expected_logits))]

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    result = client.infer(
        spec.pipeline_name,
        [_bytes_input(grpcclient, pipeline_input_name(spec), [payload])],
        outputs=[grpcclient.InferRequestedOutput("logits", class_count=2)],
    )
    top = result.as_numpy("logits")[0]  # b"score:index:label", best first
    score, index, label = top[0].decode().split(":", 2)
    assert label == expected_label and int(index) == int(np.argmax(expected_logits))
    assert float(score) == pytest.approx(float(expected_logits.max()), rel=1e-4, abs=1e-4)


def test_explain_returns_the_documented_map_shape(triton_server) -> None:
    import torch

    from attnserve.models.checkpoint import build_model

    client = httpclient.InferenceServerClient(triton_server.http_url)
    for name, spec in triton_server.specs.items():
        pixels = _pixels(spec, 2, seed=7)
        with torch.inference_mode():  # the documented shape: the module's forward_with_attention
            _, reference_map = build_model(spec).eval().forward_with_attention(torch.from_numpy(pixels))
        tensor = httpclient.InferInput("pixels", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels)
        result = client.infer(spec.explain_name, [tensor])
        attention_map = result.as_numpy("attention_map")
        assert attention_map.shape == tuple(reference_map.shape), name
        metadata = client.get_model_metadata(spec.explain_name)
        served_shape = next(o["shape"] for o in metadata["outputs"] if o["name"] == "attention_map")
        assert served_shape == [-1, *reference_map.shape[1:]]
        np.testing.assert_allclose(attention_map.reshape(2, -1).max(axis=1), 1.0, rtol=1e-5)  # scaled to max 1
        np.testing.assert_allclose(
            attention_map, _in_process(triton_server, spec.explain_name, pixels)["attention_map"], rtol=1e-4, atol=1e-5
        )


def test_corrupt_image_in_a_concurrent_burst_fails_alone(triton_server) -> None:
    spec = triton_server.specs[IMAGE_MODEL]
    payloads = [encoded_image(36, 36, seed=seed) for seed in range(8)]
    corrupt_position = 3
    payloads[corrupt_position] = b"\x89PNG\r\n\x1a\n" + b"garbage" * 20

    def send(payload: bytes):
        client = httpclient.InferenceServerClient(triton_server.http_url)
        try:
            return client.infer(spec.pipeline_name, [_bytes_input(httpclient, "image", [payload])]).as_numpy("logits")
        except InferenceServerException as exc:
            return exc
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        results = list(pool.map(send, payloads))
    failures = [position for position, r in enumerate(results) if isinstance(r, InferenceServerException)]
    assert failures == [corrupt_position]
    assert "cannot decode image" in str(results[corrupt_position])
    assert all(results[p].shape == (1, spec.num_classes) for p in range(len(payloads)) if p != corrupt_position)


def test_restricted_apis_need_the_token_over_http_and_grpc(triton_server) -> None:
    server = triton_server.server
    http = httpclient.InferenceServerClient(triton_server.http_url)
    with pytest.raises(InferenceServerException, match="restricted"):
        http.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="restricted"):
        http.unload_model("no_such_model")  # refused before the name is even looked up
    with pytest.raises(InferenceServerException, match="restricted"):
        http.get_model_repository_index(headers={"attnserve-admin-token": "wrong"})
    assert http.get_model_repository_index(headers=server.admin_headers)
    assert http.is_model_ready(IMAGE_MODEL)  # inference APIs stay open

    grpc = grpcclient.InferenceServerClient(triton_server.grpc_url)
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc.get_log_settings()
    assert grpc.get_model_repository_index(headers=server.grpc_admin_headers).models
    assert grpc.is_model_ready(IMAGE_MODEL)
