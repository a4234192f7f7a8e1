"""Typed clients for the served models: `TritonClient` (blocking) and `AsyncTritonClient` (asyncio).

Both speak HTTP or gRPC through `tritonclient` (`ClientSettings.protocol`), learn every model's inputs,
outputs, layout, labels and `max_batch_size` from the server (metadata + config + one classification
probe for the labels), validate inputs before sending, retry UNAVAILABLE / connection errors with
exponential backoff inside the settings' budget, can send large inputs through system shared memory,
and raise `InferenceError` (Triton's status kept) on failure.

    with TritonClient(ClientSettings(url="127.0.0.1:8001")) as client:
        predictions = client.classify("vit_digits", ["seven.png"], top_k=3)

All of that is written once, in `attnserve.clients.core` (the operations as I/O-free plans); this module
holds the two transports that run the plans (blocking calls and `time.sleep`, or awaited calls and
`asyncio.sleep`) and the construction of tritonclient's clients (TLS, API key).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from tritonclient._plugin import InferenceServerClientPlugin
from typing_extensions import Unpack

from attnserve.clients.core import (
    ClassCount,
    ClientCore,
    Encoded,
    Inputs,
    ModelNotFoundError,
    Plan,
    PlanSteps,
    Sleep,
    Step,
    TimelineOptions,
    VideoSource,
    build_request,
    call_kwargs,
    pixels_for,
    timeline_inputs,
)
from attnserve.clients.diagnose import explain_connection_error
from attnserve.clients.media import ImageSource
from attnserve.clients.model_info import ModelInfo
from attnserve.clients.predictions import Prediction, softmax
from attnserve.clients.settings import ClientSettings
from attnserve.detection import Detection
from attnserve.errors import InferenceError, UserInputError
from attnserve.security import API_KEY_HEADER
from attnserve.spec import OUTPUT_NAME, TIMELINE_TENSORS
from attnserve.video import Timeline

T = TypeVar("T")


def transport_module(protocol: str, asynchronous: bool) -> Any:
    """The `tritonclient` module for a protocol (`http` / `grpc`), blocking or asyncio."""
    if protocol == "grpc":
        import tritonclient.grpc as grpc_module
        import tritonclient.grpc.aio as grpc_aio_module

        return grpc_aio_module if asynchronous else grpc_module
    if protocol == "http":
        import tritonclient.http as http_module
        import tritonclient.http.aio as http_aio_module

        return http_aio_module if asynchronous else http_module
    raise UserInputError(f"protocol must be 'http' or 'grpc', got {protocol!r}")


def make_transport(settings: ClientSettings, asynchronous: bool, concurrency: int = 1) -> Any:
    """A raw `tritonclient` InferenceServerClient for the settings (timeouts applied where set at creation).

    With `settings.tls` it speaks TLS (trusting `tls_ca_file`, else the system's store); with `settings.api_key`
    every call carries the `x-api-key` header / metadata (a tritonclient plugin adds it).
    """
    module = transport_module(settings.protocol, asynchronous)
    url = settings.resolved_url
    if settings.protocol == "grpc":
        tls: dict[str, Any] = (
            {"ssl": True, "root_certificates": str(settings.tls_ca_file or "") or None} if settings.tls else {}
        )
        client = module.InferenceServerClient(url=url, **tls)
    elif asynchronous:
        tls = {"ssl": True, "ssl_context": ssl_context(settings)} if settings.tls else {}
        client = module.InferenceServerClient(
            url=url, conn_limit=max(100, concurrency), conn_timeout=settings.timeout_s, **tls
        )
    else:
        tls_options = {"ca_certs": str(settings.tls_ca_file)} if settings.tls_ca_file is not None else None
        tls = {"ssl": True, "ssl_options": tls_options} if settings.tls else {}
        client = module.InferenceServerClient(
            url=url,
            concurrency=concurrency,
            connection_timeout=settings.connect_timeout_s,
            network_timeout=settings.timeout_s,
            **tls,
        )
    if settings.api_key is not None:
        client.register_plugin(ApiKeyPlugin(settings.api_key.get_secret_value()))
    return client


def ssl_context(settings: ClientSettings) -> ssl.SSLContext:
    """Client TLS context: certificate and host name verified against `tls_ca_file` (or the system's store)."""
    return ssl.create_default_context(cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None)


class ApiKeyPlugin(InferenceServerClientPlugin):
    """Adds the edge's API key header to every request a tritonclient client sends."""

    def __init__(self, key: str) -> None:
        self._key = key

    def __call__(self, request: Any) -> None:
        request.headers[API_KEY_HEADER] = self._key


class _Client:
    """What the two clients share: settings, the core (plans, caches) and the tritonclient transport."""

    pixels_for = staticmethod(pixels_for)

    def __init__(self, settings: ClientSettings | None, asynchronous: bool, concurrency: int) -> None:
        self.settings = settings or ClientSettings()
        self.url = self.settings.resolved_url
        self._module = transport_module(self.settings.protocol, asynchronous)
        self._transport = make_transport(self.settings, asynchronous, concurrency)
        self._core = ClientCore(self.settings, self._module)

    @property
    def transport(self) -> Any:
        """The underlying `tritonclient` client (for the load tester's hot loop)."""
        return self._transport

    @property
    def module(self) -> Any:
        """The `tritonclient` module in use (its `InferInput` / `InferRequestedOutput` classes)."""
        return self._module


class TritonClient(_Client):
    """Blocking client (tritonclient.http or tritonclient.grpc): runs the core's plans with blocking calls.

    Args:
        settings: URL, protocol, timeouts, retries, TLS/key, shared memory (default: from the environment).
        concurrency: connections of the HTTP client's pool.
    """

    def __init__(self, settings: ClientSettings | None = None, concurrency: int = 1) -> None:
        super().__init__(settings, asynchronous=False, concurrency=concurrency)

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._transport.close()

    def _run(self, plan: Plan[T]) -> T:
        """Drive a core plan to its result: each call made on the blocking transport, pauses with `time.sleep`."""
        steps = PlanSteps(plan)
        try:
            for step in steps:
                steps.settle(self._perform, step)
        except InferenceError as exc:
            explained = explain_connection_error(exc, self.settings)  # probes the endpoint after a connection error
            if explained is None:
                raise
            raise explained from exc
        return steps.result

    def _perform(self, step: Step) -> Any:
        return time.sleep(step.seconds) if isinstance(step, Sleep) else step.on(self._transport)

    def is_ready(self) -> bool:
        """True when the server answers ready (no retries)."""
        return self._run(self._core.is_ready())

    def model_info(self, model: str) -> ModelInfo:
        """What the server says about `model` (cached); `ModelNotFoundError` when it does not serve it."""
        return self._run(self._core.model_info(model))

    def statistics(self, model: str) -> dict[str, Any]:
        """Triton's inference statistics for `model` (JSON form)."""
        return self._run(self._core.statistics(model))

    def labels(self, model: str, output: str = OUTPUT_NAME) -> tuple[str, ...]:
        """Class labels of `model`'s `output`, read through Triton's classification extension (cached)."""
        return self._run(self._core.labels(model, output))

    def infer(
        self, model: str, inputs: Inputs, outputs: Sequence[str] | None = None, class_count: ClassCount | None = None
    ) -> dict[str, np.ndarray]:
        """Raw inference: validated arrays in, arrays out (all outputs unless `outputs` names some).

        Inputs travel through system shared memory when `settings.shared_memory` is on (see `ClientCore.infer`).

        Raises:
            UserInputError: inputs do not match the model's metadata (nothing is sent).
            InferenceError: the server refused or failed the request (after retries when retryable).
        """
        return self._run(self._core.infer(model, inputs, outputs, class_count))

    def classify(self, model: str, images: ImageSource | Sequence[ImageSource], top_k: int = 5) -> list[Prediction]:
        """Classify images (paths, bytes, PIL images, uint8 arrays) or, for video models, videos.

        Images become the model's input client-side through the preprocessing the model declares (read from
        the server: squash, letterbox or crop to its size, channel order), the same transform as training;
        batches larger than the model's `max_batch_size` are split into several requests.
        """
        return self._run(self._core.classify(model, images, top_k))

    def classify_video(self, model: str, video: VideoSource, top_k: int = 5) -> Prediction:
        """Classify one video (file, bytes or a uint8 (T,C,H,W) array) with a video model."""
        return self._run(self._core.classify_video(model, video, top_k))

    def classify_encoded(self, pipeline_model: str, payloads: Sequence[Encoded], top_k: int = 5) -> list[Prediction]:
        """Send encoded image/video bytes to a `NAME_pipeline` ensemble (server-side decoding)."""
        return self._run(self._core.classify_encoded(pipeline_model, payloads, top_k))

    def detect(self, model: str, images: Encoded | Sequence[Encoded]) -> list[list[Detection]]:
        """Detect objects in images (files or encoded bytes) with a detector's `NAME_pipeline`.

        Returns:
            Per image, its detections best first: `{"label", "score", "box": [x0, y0, x1, y1]}` in the image's
            own pixels (the server maps boxes back through the model's preprocessing); `[]` when none.

        Raises:
            InferenceError: INVALID_ARGUMENT (400) for an undecodable image, with the reason.
        """
        return self._run(self._core.detect(model, images))

    def explain_detections(self, model: str, image: ImageSource) -> tuple[list[Detection], np.ndarray]:
        """A DETR-style detector's detections of `image` (boxes in its pixels, the default threshold) and one
        cross-attention map per detection (N, gh, gw) over the model's input frame, from `NAME_explain`."""
        return self._run(self._core.explain_detections(model, image))

    def timeline(self, model: str, video: Encoded, **options: Unpack[TimelineOptions]) -> Timeline:
        """Label a video of any length with `NAME_timeline`: per-segment top-k and a video-level result.

        Args:
            model: a video model `NAME` (or `NAME_timeline`).
            video: a file or encoded bytes (decoded once, server-side).
            **options: `TimelineOptions`, all keyword-only: `window_s` (window length; default: the model's frames
                at the video's rate; 0 = the whole video), `stride_s` (step between windows; default: half the
                window), `top_k` (labels per segment and for the video; default 3), `clips_per_request` (clips
                per request to the classifier; default 0 = its max batch, 1 = unbatched).

        Raises:
            InferenceError: INVALID_ARGUMENT (400) for a bad video or window, with the reason.
        """
        return self._run(self._core.timeline(model, video, options))

    def explain(self, model: str, image: ImageSource) -> tuple[Prediction, np.ndarray]:
        """Prediction and attention map of one image/video, from `NAME_explain` (`model` may name either)."""
        return self._run(self._core.explain(model, image))


class AsyncTritonClient(_Client):
    """asyncio client (tritonclient.http.aio or tritonclient.grpc.aio): the methods of `TritonClient`, awaited.

    Args:
        settings: as for `TritonClient`.
        concurrency: connections the HTTP client may open (at least 100).
    """

    def __init__(self, settings: ClientSettings | None = None, concurrency: int = 100) -> None:
        super().__init__(settings, asynchronous=True, concurrency=concurrency)

    async def __aenter__(self) -> AsyncTritonClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection."""
        await self._transport.close()

    async def _run(self, plan: Plan[T]) -> T:
        """Drive a core plan to its result: each call awaited on the asyncio transport, pauses with `asyncio.sleep`."""
        steps = PlanSteps(plan)
        try:
            for step in steps:
                try:
                    steps.reply(
                        await (asyncio.sleep(step.seconds) if isinstance(step, Sleep) else step.on(self._transport))
                    )
                except Exception as exc:  # noqa: BLE001 - handed to the plan, which retries, cleans up or raises it
                    steps.fail(exc)
        except InferenceError as exc:
            explained = await asyncio.to_thread(explain_connection_error, exc, self.settings)  # blocking probes
            if explained is None:
                raise
            raise explained from exc
        return steps.result

    async def is_ready(self) -> bool:
        """See `TritonClient.is_ready`."""
        return await self._run(self._core.is_ready())

    async def model_info(self, model: str) -> ModelInfo:
        """See `TritonClient.model_info`."""
        return await self._run(self._core.model_info(model))

    async def statistics(self, model: str) -> dict[str, Any]:
        """See `TritonClient.statistics`."""
        return await self._run(self._core.statistics(model))

    async def labels(self, model: str, output: str = OUTPUT_NAME) -> tuple[str, ...]:
        """See `TritonClient.labels`."""
        return await self._run(self._core.labels(model, output))

    async def infer(
        self, model: str, inputs: Inputs, outputs: Sequence[str] | None = None, class_count: ClassCount | None = None
    ) -> dict[str, np.ndarray]:
        """See `TritonClient.infer` (shared memory included)."""
        return await self._run(self._core.infer(model, inputs, outputs, class_count))

    async def classify(
        self, model: str, images: ImageSource | Sequence[ImageSource], top_k: int = 5
    ) -> list[Prediction]:
        """See `TritonClient.classify`."""
        return await self._run(self._core.classify(model, images, top_k))

    async def classify_video(self, model: str, video: VideoSource, top_k: int = 5) -> Prediction:
        """See `TritonClient.classify_video`."""
        return await self._run(self._core.classify_video(model, video, top_k))

    async def classify_encoded(
        self, pipeline_model: str, payloads: Sequence[Encoded], top_k: int = 5
    ) -> list[Prediction]:
        """See `TritonClient.classify_encoded`."""
        return await self._run(self._core.classify_encoded(pipeline_model, payloads, top_k))

    async def detect(self, model: str, images: Encoded | Sequence[Encoded]) -> list[list[Detection]]:
        """See `TritonClient.detect`."""
        return await self._run(self._core.detect(model, images))

    async def explain_detections(self, model: str, image: ImageSource) -> tuple[list[Detection], np.ndarray]:
        """See `TritonClient.explain_detections`."""
        return await self._run(self._core.explain_detections(model, image))

    async def timeline(self, model: str, video: Encoded, **options: Unpack[TimelineOptions]) -> Timeline:
        """See `TritonClient.timeline`."""
        return await self._run(self._core.timeline(model, video, options))

    async def explain(self, model: str, image: ImageSource) -> tuple[Prediction, np.ndarray]:
        """See `TritonClient.explain`."""
        return await self._run(self._core.explain(model, image))


__all__ = [
    "TIMELINE_TENSORS",
    "AsyncTritonClient",
    "ModelNotFoundError",
    "Prediction",
    "TritonClient",
    "build_request",
    "call_kwargs",
    "make_transport",
    "softmax",
    "timeline_inputs",
    "transport_module",
]
