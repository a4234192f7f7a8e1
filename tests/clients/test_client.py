"""The typed clients against a real Triton server: parity with in-process ONNX Runtime, errors, retries."""

from __future__ import annotations

import asyncio
import inspect
import io
import socket
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from attnserve.clients.client import AsyncTritonClient, ModelNotFoundError, TritonClient
from attnserve.clients.core import Call, Operation
from attnserve.clients.predictions import softmax
from attnserve.clients.settings import ClientSettings
from attnserve.clients.status import ServerUnavailableError
from attnserve.errors import DTypeError, InferenceError, ShapeError

pytestmark = pytest.mark.triton

IMAGE_MODEL = "vit_shapes"  # (3, 32, 32), 4 labels, in the shared triton_server fixture
VIDEO_MODEL = "timesformer_motion"  # (8, 3, 32, 32)
IMAGE_SHAPE = (3, 32, 32)
VIDEO_SHAPE = (8, 3, 32, 32)


def settings_for(server: Any, protocol: str, **overrides: object) -> ClientSettings:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return ClientSettings(url=url, protocol=protocol, **overrides)


def reference(server: Any, model: str, pixels: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(server.onnx_paths[model]), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": pixels})


def random_pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_equals_in_process_onnxruntime(triton_server: Any, protocol: str) -> None:
    pixels = random_pixels((5, *IMAGE_SHAPE))
    with TritonClient(settings_for(triton_server, protocol)) as client:
        served = client.infer(IMAGE_MODEL, {"pixels": pixels})["logits"]
        info = client.model_info(IMAGE_MODEL)
    np.testing.assert_allclose(served, reference(triton_server, IMAGE_MODEL, pixels)[0], rtol=1e-4, atol=1e-4)
    assert (
        info.max_batch_size == triton_server.specs[IMAGE_MODEL].serving.max_batch_size
        and info.layout == "NCHW"
        and info.image_size == IMAGE_SHAPE[1:]
    )


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_client_classifies_like_onnxruntime(triton_server: Any, protocol: str) -> None:
    pixels = random_pixels((19, *IMAGE_SHAPE), seed=3)  # 19 > max_batch_size 16: split into two requests

    async def classify() -> list:
        async with AsyncTritonClient(settings_for(triton_server, protocol)) as client:
            return await client.classify(IMAGE_MODEL, list(pixels), top_k=3)

    predictions = asyncio.run(classify())
    probabilities = softmax(reference(triton_server, IMAGE_MODEL, pixels)[0])
    assert [p.index for p in predictions] == list(probabilities.argmax(axis=1))
    assert [p.label for p in predictions] == [
        triton_server.specs[IMAGE_MODEL].io.labels[i] for i in probabilities.argmax(axis=1)
    ]
    np.testing.assert_allclose([p.score for p in predictions], probabilities.max(axis=1), rtol=1e-4)
    assert all(len(p.top_k) == 3 and p.top_k[0].score >= p.top_k[2].score for p in predictions)


def test_image_sources_agree(triton_server: Any, tmp_path) -> None:
    """A path, its bytes, a PIL image and an HWC array give the same prediction as the resized pixels."""
    image = Image.fromarray(random_pixels((40, 60, 3), seed=5), mode="RGB")
    path = tmp_path / "photo.png"
    image.save(path)
    with TritonClient(settings_for(triton_server, "grpc")) as client:
        from_sources = client.classify(IMAGE_MODEL, [path, path.read_bytes(), image, np.asarray(image)], top_k=4)
        pixels = client.pixels_for(client.model_info(IMAGE_MODEL), [path])
    expected = softmax(reference(triton_server, IMAGE_MODEL, pixels)[0])[0]
    assert pixels.shape == (1, *IMAGE_SHAPE)
    assert from_sources[0].source == str(path)  # the path as given
    for prediction in from_sources:
        np.testing.assert_allclose(sorted(s.score for s in prediction.top_k), sorted(expected), rtol=1e-4)


def test_explain_and_video(triton_server: Any) -> None:
    pixels = random_pixels(IMAGE_SHAPE, seed=7)
    clip = random_pixels(VIDEO_SHAPE, seed=8)
    with TritonClient(settings_for(triton_server, "http")) as client:
        prediction, attention_map = client.explain(IMAGE_MODEL, pixels)
        video_prediction = client.classify_video(VIDEO_MODEL, clip, top_k=2)
    logits, expected_map = reference(triton_server, "vit_shapes_explain", pixels[None])
    np.testing.assert_allclose(attention_map, expected_map[0], rtol=1e-4, atol=1e-5)
    assert prediction.index == int(logits.argmax())
    video_logits = reference(triton_server, VIDEO_MODEL, clip[None])[0]
    assert video_prediction.label == triton_server.specs[VIDEO_MODEL].io.labels[int(video_logits.argmax())]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bad_requests_raise_clear_client_errors(triton_server: Any, protocol: str) -> None:
    with TritonClient(settings_for(triton_server, protocol)) as client:
        with pytest.raises(ShapeError, match=r"expected shape \[N, 3, 32, 32\], got \[2, 3, 9, 8\]"):
            client.infer(IMAGE_MODEL, {"pixels": np.zeros((2, 3, 9, 8), np.uint8)})
        with pytest.raises(DTypeError, match="expected dtype uint8"):
            client.infer(IMAGE_MODEL, {"pixels": np.zeros((2, *IMAGE_SHAPE), np.float32)})
        with pytest.raises(ModelNotFoundError, match="no_such_model") as caught:
            client.infer("no_such_model", {"pixels": np.zeros((1, *IMAGE_SHAPE), np.uint8)})
    assert isinstance(caught.value, InferenceError) and caught.value.status  # Triton's status is kept


def test_server_side_rejection_keeps_triton_status(triton_server: Any) -> None:
    """Skipping client validation, the server's own INVALID_ARGUMENT comes back as InferenceError (no retry)."""
    import tritonclient.grpc as grpcclient

    with TritonClient(settings_for(triton_server, "grpc", retries=5)) as client:
        bad = grpcclient.InferInput("pixels", [1, 3, 9, 8], "UINT8")
        bad.set_data_from_numpy(np.zeros((1, 3, 9, 8), np.uint8))
        with pytest.raises(InferenceError, match="INVALID_ARGUMENT") as caught:
            client._run(client._core.retrying(Call(Operation.INFER, (IMAGE_MODEL, [bad])), IMAGE_MODEL))
    assert not isinstance(caught.value, ServerUnavailableError)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_down_retries_then_fails_clearly(protocol: str) -> None:
    settings = ClientSettings(
        url=f"127.0.0.1:{unused_port()}",
        protocol=protocol,
        retries=2,
        backoff_s=0.01,
        backoff_max_s=0.02,
        timeout_s=2.0,
    )
    with TritonClient(settings) as client:
        with pytest.raises(
            ServerUnavailableError, match=r"nothing is listening on .*gave up after 3 attempt"
        ) as caught:
            client.model_info(IMAGE_MODEL)
    assert caught.value.kind == "connection" and caught.value.attempts == 3


def test_retry_budget_bounds_the_attempts() -> None:
    """retries=100 but a 0.3 s budget: backoffs 0.05 + 0.1 fit, the next 0.2 would pass it -> 3 attempts."""
    settings = ClientSettings(
        url=f"127.0.0.1:{unused_port()}",
        protocol="grpc",
        retries=100,
        backoff_s=0.05,
        backoff_max_s=1.0,
        retry_budget_s=0.3,
        timeout_s=2.0,
    )

    async def describe() -> None:
        async with AsyncTritonClient(settings) as client:
            await client.model_info(IMAGE_MODEL)

    with pytest.raises(ServerUnavailableError) as caught:
        asyncio.run(describe())
    assert caught.value.attempts == 3


def test_shared_memory_inputs_need_the_admin_token(triton_server: Any) -> None:
    pixels = random_pixels((4, *IMAGE_SHAPE), seed=9)
    with TritonClient(
        settings_for(
            triton_server, "grpc", shared_memory=True, shared_memory_min_bytes=0, admin_token=triton_server.admin_token
        )
    ) as client:
        served = client.infer(IMAGE_MODEL, {"pixels": pixels})["logits"]
    np.testing.assert_allclose(served, reference(triton_server, IMAGE_MODEL, pixels)[0], rtol=1e-4, atol=1e-4)
    with TritonClient(settings_for(triton_server, "http", shared_memory=True, shared_memory_min_bytes=0)) as client:
        with pytest.raises(InferenceError, match="(?i)shared.memory|restricted|403|PERMISSION"):
            client.infer(IMAGE_MODEL, {"pixels": pixels})


def test_pipeline_bytes_match_client_side_pixels(triton_server: Any) -> None:
    """Encoded PNG bytes to NAME_pipeline (server decodes) give the prediction of the same pixels sent raw."""
    pixels = random_pixels((32, 32, 3), seed=11)  # already the model's size: no resizing on either side
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    with TritonClient(settings_for(triton_server, "grpc")) as client:
        via_pipeline = client.classify_encoded(f"{IMAGE_MODEL}_pipeline", [buffer.getvalue()], top_k=4)[0]
        direct = client.classify(IMAGE_MODEL, [pixels], top_k=4)[0]
    assert via_pipeline.label == direct.label
    np.testing.assert_allclose(via_pipeline.score, direct.score, atol=1e-4)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_client_sends_encoded_bytes_like_the_blocking_one(triton_server: Any, protocol: str) -> None:
    """classify_encoded (server-side decoding) answers the same through both clients, for a batch of two."""
    payloads = [png_bytes(random_pixels((32, 32, 3), seed=seed)) for seed in (12, 13)]
    settings = settings_for(triton_server, protocol)

    async def classify() -> list:
        async with AsyncTritonClient(settings) as client:
            return await client.classify_encoded(f"{IMAGE_MODEL}_pipeline", payloads, top_k=4)

    asynchronous = asyncio.run(classify())
    with TritonClient(settings) as client:
        blocking = client.classify_encoded(f"{IMAGE_MODEL}_pipeline", payloads, top_k=4)
        direct = client.classify(IMAGE_MODEL, [random_pixels((32, 32, 3), seed=seed) for seed in (12, 13)], top_k=4)
    assert [p.label for p in asynchronous] == [p.label for p in blocking] == [p.label for p in direct]
    assert [p.source for p in asynchronous] == ["#0", "#1"]
    np.testing.assert_allclose([p.score for p in asynchronous], [p.score for p in direct], atol=1e-4)


def _system_regions(server: Any) -> list[str]:
    """The names of the system shared-memory regions the server has registered (gRPC, with the admin token)."""
    import tritonclient.grpc as grpcclient

    headers = settings_for(server, "grpc", admin_token=server.admin_token).admin_headers()
    with grpcclient.InferenceServerClient(server.grpc_url) as raw:
        return list(raw.get_system_shared_memory_status(headers=headers).regions)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_client_sends_inputs_through_shared_memory(triton_server: Any, protocol: str) -> None:
    """With the admin token the asyncio client's inputs travel through shared memory; no region is left behind."""
    pixels = random_pixels((3, *IMAGE_SHAPE), seed=14)
    settings = settings_for(
        triton_server, protocol, shared_memory=True, shared_memory_min_bytes=0, admin_token=triton_server.admin_token
    )

    async def infer() -> tuple[Call, np.ndarray]:
        async with AsyncTritonClient(settings) as client:
            await client.model_info(IMAGE_MODEL)
            abandoned = client._core.infer(IMAGE_MODEL, {"pixels": pixels})
            first_step = next(abandoned)  # the region is created and about to be registered...
            abandoned.close()  # ...when the caller goes away (a cancelled task): freed locally, nothing sent
            return first_step, (await client.infer(IMAGE_MODEL, {"pixels": pixels}))["logits"]

    first_step, served = asyncio.run(infer())
    assert isinstance(first_step, Call) and first_step.method is Operation.REGISTER_SYSTEM_SHARED_MEMORY
    np.testing.assert_allclose(served, reference(triton_server, IMAGE_MODEL, pixels)[0], rtol=1e-4, atol=1e-4)
    assert _system_regions(triton_server) == []  # unregistered once the answer came


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_shared_memory_without_the_admin_token_is_refused(triton_server: Any, protocol: str) -> None:
    settings = settings_for(triton_server, protocol, shared_memory=True, shared_memory_min_bytes=0, retries=0)

    async def infer() -> None:
        async with AsyncTritonClient(settings) as client:
            await client.infer(IMAGE_MODEL, {"pixels": random_pixels((1, *IMAGE_SHAPE))})

    with pytest.raises(InferenceError, match="(?i)shared.memory|restricted|403|PERMISSION"):
        asyncio.run(infer())
    assert _system_regions(triton_server) == []


def test_blocking_and_asyncio_clients_offer_the_same_methods() -> None:
    """Same I/O methods with the same parameters, the asyncio ones coroutines (`pixels_for` etc. are shared)."""

    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in vars(cls).items()
            if inspect.isfunction(member) and not name.startswith("_")
        }

    blocking, asynchronous = public(TritonClient), public(AsyncTritonClient)
    assert blocking.keys() == asynchronous.keys()
    assert {"classify_encoded", "infer", "classify", "classify_video", "explain", "timeline"} <= blocking.keys()
    for name in blocking:
        assert list(blocking[name].parameters) == list(asynchronous[name].parameters), name
        assert inspect.iscoroutinefunction(getattr(AsyncTritonClient, name)), name
