"""Typed clients for the served models: `TritonClient` (blocking) and `AsyncTritonClient` (asyncio).

Both speak HTTP or gRPC through `tritonclient` (`ClientSettings.protocol`), learn every model's inputs,
outputs, layout, labels and `max_batch_size` from the server (metadata + config + one classification
probe for the labels), validate inputs before sending, retry UNAVAILABLE / connection errors with
exponential backoff inside the settings' budget, and raise `InferenceError` (Triton's status kept) on
failure.

    with TritonClient(ClientSettings(url="127.0.0.1:8001")) as client:
        predictions = client.classify("vit_digits", ["seven.png"], top_k=3)
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tritonclient._plugin import InferenceServerClientPlugin

from attnserve.clients.media import ImageSource, image_to_tensor, read_bytes, video_to_tensor
from attnserve.clients.model_info import ModelInfo
from attnserve.clients.predictions import Prediction, parse_classification, predictions_from_logits, softmax
from attnserve.clients.settings import ClientSettings
from attnserve.clients.status import ServerUnavailableError, is_retryable, to_inference_error
from attnserve.errors import InferenceError, ShapeError, UserInputError
from attnserve.security import API_KEY_HEADER
from attnserve.spec import ATTENTION_OUTPUT_NAME, OUTPUT_NAME, explain_name, timeline_name
from attnserve.video import Timeline

log = logging.getLogger(__name__)

T = TypeVar("T")


class ModelNotFoundError(InferenceError):
    """The server does not serve (or has not loaded) the requested model."""


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


def call_kwargs(settings: ClientSettings) -> dict[str, Any]:
    """Per-call keyword arguments: gRPC takes its deadline per call, HTTP at client creation."""
    return {"client_timeout": settings.timeout_s} if settings.protocol == "grpc" else {}


def build_request(
    module: Any,
    info: ModelInfo,
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None = None,
    class_count: Mapping[str, int] | None = None,
) -> tuple[list[Any], list[Any]]:
    """`InferInput`s and `InferRequestedOutput`s for a validated request."""
    infer_inputs = []
    for tensor in info.inputs:
        array = inputs[tensor.name]
        infer_input = module.InferInput(tensor.name, list(array.shape), tensor.datatype)
        infer_input.set_data_from_numpy(array)
        infer_inputs.append(infer_input)
    wanted = list(outputs) if outputs is not None else [o.name for o in info.outputs]
    known = {o.name for o in info.outputs}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise UserInputError(f"model {info.name!r} has outputs {sorted(known)}, asked for {unknown}")
    class_count = class_count or {}
    requested = [module.InferRequestedOutput(name, class_count=class_count.get(name, 0)) for name in wanted]
    return infer_inputs, requested


class _ClientCore:
    """Protocol-independent state and logic shared by the blocking and asyncio clients."""

    def __init__(self, settings: ClientSettings | None = None) -> None:
        self.settings = settings or ClientSettings()
        self.url = self.settings.resolved_url
        self._infos: dict[str, ModelInfo] = {}
        self._labels: dict[str, tuple[str, ...]] = {}

    # retry policy ---------------------------------------------------------------------------------
    def _next_delay(
        self, exc: BaseException, model: str | None, attempt: int, started: float, delay: float
    ) -> tuple[InferenceError, float | None]:
        """The wrapped error and how long to wait before the next attempt (None = give up)."""
        error = to_inference_error(exc, model, self.url)
        if not is_retryable(error):
            return error, None
        spent = time.monotonic() - started
        if attempt > self.settings.retries or spent + delay > self.settings.retry_budget_s:
            text = str(error).removeprefix(f"[{error.status}] ") if error.status else str(error)
            message = (
                f"{text} (gave up after {attempt} attempt(s) in {spent:.2f} s; retries="
                f"{self.settings.retries}, retry_budget_s={self.settings.retry_budget_s})"
            )
            final = ServerUnavailableError(
                message, status=error.status, model=model, kind=getattr(error, "kind", "rejected")
            )
            final.attempts = attempt
            raise final from exc
        log.info("retrying %s in %.3f s after: %s", model or "request", delay, error)
        return error, min(delay * 2, self.settings.backoff_max_s)

    # model description ----------------------------------------------------------------------------
    @staticmethod
    def _metadata_error(exc: BaseException, model: str, url: str) -> InferenceError:
        error = to_inference_error(exc, model, url)
        text = str(error).lower()
        if not isinstance(error, ServerUnavailableError) and (
            "unknown model" in text or "not found" in text or "not ready" in text
        ):
            return ModelNotFoundError(
                f"expected a model {model!r} served (and READY) at {url}, the server says: {error.detail}",
                status=error.status,
                model=model,
            )
        return error

    @staticmethod
    def _probe_inputs(info: ModelInfo) -> dict[str, np.ndarray]:
        """Smallest valid request (zeros, batch 1) used to read the labels through the classification extension."""
        probe = {}
        for tensor in info.inputs:
            shape = [1 if d < 0 else d for d in tensor.shape]
            if tensor.datatype == "BYTES":
                raise UserInputError(f"model {info.name!r} takes bytes; ask its tensor model for labels instead")
            probe[tensor.name] = np.zeros(shape, dtype=tensor.numpy_dtype)
        return probe

    @staticmethod
    def _labels_from_probe(info: ModelInfo, entries: np.ndarray) -> tuple[str, ...]:
        parsed = parse_classification(entries)
        labels = [""] * (max(i for _, i, _ in parsed) + 1)
        for _, index, label in parsed:
            labels[index] = label
        return tuple(labels)

    @staticmethod
    def _num_classes(info: ModelInfo, output: str) -> int:
        return int(info.sample_shape(info.output(output))[-1])

    # request building ------------------------------------------------------------------------------
    @staticmethod
    def pixels_for(info: ModelInfo, images: Sequence[ImageSource]) -> np.ndarray:
        """The uint8 batch the model takes for `images` (decoded and transformed as the model declares)."""
        if info.layout not in ("NCHW", "NTCHW"):
            raise UserInputError(
                f"model {info.name!r} takes {info.input().datatype} input {info.input().name!r}, not pixels; "
                "use infer() or its _pipeline model"
            )
        height, width = info.image_size
        if info.layout == "NTCHW":
            frames = info.frames or 1
            tensors = [_video_tensor(image, frames, height, width, info.channels, info) for image in images]
        else:
            preprocessing = info.preprocessing  # the served spec's declared transform, as in training
            tensors = [image_to_tensor(image, height, width, info.channels, preprocessing) for image in images]
        return np.stack(tensors)

    @staticmethod
    def _chunks(info: ModelInfo, count: int) -> list[slice]:
        step = info.max_batch_size if info.max_batch_size > 0 else 1
        return [slice(i, min(i + step, count)) for i in range(0, count, step)]


def _video_tensor(source: Any, frames: int, height: int, width: int, channels: int, info: ModelInfo) -> np.ndarray:
    if isinstance(source, np.ndarray) and source.ndim == 4:
        if source.shape != (frames, channels, height, width):
            raise ShapeError(f"expected a video array of shape {(frames, channels, height, width)}, got {source.shape}")
        return source
    return video_to_tensor(source, frames, height, width, channels, info.preprocessing)


def _sources(images: Sequence[Any]) -> list[str]:
    return [Path(image).name if isinstance(image, (str, Path)) else f"#{i}" for i, image in enumerate(images)]


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (str, Path, bytes)) or not isinstance(images, Sequence):
        return [images]
    return list(images)


class TritonClient(_ClientCore):
    """Blocking client (tritonclient.http or tritonclient.grpc)."""

    def __init__(self, settings: ClientSettings | None = None) -> None:
        super().__init__(settings)
        self._module = transport_module(self.settings.protocol, asynchronous=False)
        self._transport = make_transport(self.settings, asynchronous=False)
        self._kwargs = call_kwargs(self.settings)

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._transport.close()

    def _retrying(self, call: Callable[[], T], model: str | None) -> T:
        started, attempt, delay = time.monotonic(), 0, self.settings.backoff_s
        while True:
            attempt += 1
            try:
                return call()
            except (InferenceError, UserInputError):
                raise
            except Exception as exc:
                error, next_delay = self._next_delay(exc, model, attempt, started, delay)
                if next_delay is None:
                    raise error from exc
                time.sleep(delay)
                delay = next_delay

    # server -----------------------------------------------------------------------------------------
    def is_ready(self) -> bool:
        """True when the server answers ready (no retries)."""
        try:
            return bool(self._transport.is_server_ready(**self._kwargs))
        except Exception:  # noqa: BLE001 - "not ready" is the answer to any failure here
            return False

    def model_info(self, model: str) -> ModelInfo:
        """What the server says about `model` (cached)."""
        if model not in self._infos:

            def describe() -> ModelInfo:
                kwargs = dict(self._kwargs, as_json=True) if self.settings.protocol == "grpc" else {}
                metadata = self._transport.get_model_metadata(model, **kwargs)
                config = self._transport.get_model_config(model, **kwargs)
                return ModelInfo.from_server(metadata, config)

            try:
                self._infos[model] = self._retrying(describe, model)
            except InferenceError as exc:
                raise self._metadata_error(exc, model, self.url) from exc
        return self._infos[model]

    def statistics(self, model: str) -> dict[str, Any]:
        """Triton's inference statistics for `model` (JSON form)."""
        kwargs = dict(self._kwargs, as_json=True) if self.settings.protocol == "grpc" else {}
        return self._retrying(lambda: self._transport.get_inference_statistics(model, **kwargs), model)

    def labels(self, model: str, output: str = OUTPUT_NAME) -> tuple[str, ...]:
        """Class labels of `model`'s `output`, read through Triton's classification extension (cached)."""
        key = f"{model}/{output}"
        if key not in self._labels:
            info = self.model_info(model)
            if not info.output(output).labelled:
                self._labels[key] = tuple(str(i) for i in range(self._num_classes(info, output)))
            else:
                count = self._num_classes(info, output)
                result = self.infer(model, self._probe_inputs(info), outputs=[output], class_count={output: count})
                self._labels[key] = self._labels_from_probe(info, result[output])
        return self._labels[key]

    # inference ------------------------------------------------------------------------------------------
    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        class_count: Mapping[str, int] | None = None,
    ) -> dict[str, np.ndarray]:
        """Raw inference: validated arrays in, arrays out (all outputs unless `outputs` names some).

        Raises:
            UserInputError: inputs do not match the model's metadata (nothing is sent).
            InferenceError: the server refused or failed the request (after retries when retryable).
        """
        info = self.model_info(model)
        info.validate_inputs(inputs)
        infer_inputs, requested = build_request(self._module, info, inputs, outputs, class_count)
        regions = self._shared_memory_inputs(infer_inputs, inputs) if self.settings.shared_memory else []
        try:
            result = self._retrying(
                lambda: self._transport.infer(model, infer_inputs, outputs=requested, **self._kwargs), model
            )
        finally:
            self._release_shared_memory(regions)
        return {_output_name(r): result.as_numpy(_output_name(r)) for r in requested}

    def classify(self, model: str, images: ImageSource | Sequence[ImageSource], top_k: int = 5) -> list[Prediction]:
        """Classify images (paths, bytes, PIL images, uint8 arrays) or, for video models, videos.

        Images are resized and centre-cropped client-side to the model's input size; batches larger than
        the model's `max_batch_size` are split into several requests.
        """
        info = self.model_info(model)
        images = _as_list(images)
        pixels = self.pixels_for(info, images)
        labels = self.labels(model)
        predictions: list[Prediction] = []
        sources = _sources(images)
        for chunk in self._chunks(info, len(images)):
            started = time.perf_counter()
            logits = self.infer(model, {info.input().name: pixels[chunk]}, outputs=[OUTPUT_NAME])[OUTPUT_NAME]
            latency_ms = (time.perf_counter() - started) * 1e3
            predictions += predictions_from_logits(logits, labels, top_k, latency_ms, sources[chunk])
        return predictions

    def classify_video(self, model: str, video: str | Path | bytes | np.ndarray, top_k: int = 5) -> Prediction:
        """Classify one video (file, bytes or a uint8 (T,C,H,W) array) with a video model."""
        info = self.model_info(model)
        if info.layout != "NTCHW":
            raise UserInputError(f"model {model!r} takes {info.layout} images, expected a video model (NTCHW)")
        return self.classify(model, [video], top_k=top_k)[0]

    def classify_encoded(
        self, pipeline_model: str, payloads: Sequence[str | Path | bytes], top_k: int = 5
    ) -> list[Prediction]:
        """Send encoded image/video bytes to a `NAME_pipeline` ensemble (server-side decoding)."""
        info = self.model_info(pipeline_model)
        tensor = info.input()
        sample_rank = len(info.sample_shape(tensor))
        encoded = [read_bytes(p) for p in payloads]
        array = np.array(encoded, dtype=np.object_).reshape((len(encoded),) + (1,) * sample_rank)
        output = info.output()
        count = self._num_classes(info, output.name)
        started = time.perf_counter()
        result = self.infer(
            pipeline_model, {tensor.name: array}, outputs=[output.name], class_count={output.name: count}
        )[output.name]
        latency_ms = (time.perf_counter() - started) * 1e3
        return _predictions_from_classification(result, len(encoded), count, top_k, latency_ms, _sources(payloads))

    def timeline(
        self,
        model: str,
        video: str | Path | bytes,
        *,
        window_s: float | None = None,
        stride_s: float | None = None,
        top_k: int = 3,
        clips_per_request: int = 0,
    ) -> Timeline:
        """Label a video of any length with `NAME_timeline`: per-segment top-k and a video-level result.

        Args:
            model: a video model `NAME` (or `NAME_timeline`).
            video: a file or encoded bytes (decoded once, server-side).
            window_s: window length (default: the model's frames at the video's rate; 0 = the whole video).
            stride_s: step between windows (default: half the window).
            top_k: labels per segment and for the video.
            clips_per_request: clips per request to the classifier (0 = its max batch; 1 = unbatched).

        Raises:
            InferenceError: INVALID_ARGUMENT (400) for a bad video or window, with the reason.
        """
        name = timeline_name(model)
        inputs = timeline_inputs(read_bytes(video), window_s, stride_s, top_k, clips_per_request)
        result = self.infer(name, inputs, outputs=[TIMELINE_OUTPUT])[TIMELINE_OUTPUT]
        return Timeline.model_validate_json(result.reshape(-1)[0])

    def explain(self, model: str, image: ImageSource) -> tuple[Prediction, np.ndarray]:
        """Prediction and attention map of one image/video, from `NAME_explain` (`model` may name either)."""
        explain_model = explain_name(model)
        info = self.model_info(explain_model)
        pixels = self.pixels_for(info, [image])
        started = time.perf_counter()
        result = self.infer(explain_model, {info.input().name: pixels})
        latency_ms = (time.perf_counter() - started) * 1e3
        prediction = predictions_from_logits(
            result[OUTPUT_NAME], self.labels(explain_model), 5, latency_ms, _sources([image])
        )[0]
        return prediction, result[ATTENTION_OUTPUT_NAME][0]

    # shared memory ----------------------------------------------------------------------------------------
    def _shared_memory_inputs(self, infer_inputs: list[Any], inputs: Mapping[str, np.ndarray]) -> list[tuple[str, Any]]:
        """Move inputs of at least `shared_memory_min_bytes` into registered system shared-memory regions."""
        import tritonclient.utils.shared_memory as shm

        regions = []
        headers = self.settings.admin_headers()
        for infer_input in infer_inputs:
            array = inputs[infer_input.name()]
            if array.nbytes < self.settings.shared_memory_min_bytes or array.dtype == np.object_:
                continue
            region = f"attnserve_{os.getpid()}_{uuid.uuid4().hex[:12]}"
            handle = shm.create_shared_memory_region(region, f"/{region}", array.nbytes)
            regions.append((region, handle))
            shm.set_shared_memory_region(handle, [np.ascontiguousarray(array)])
            try:
                self._transport.register_system_shared_memory(region, f"/{region}", array.nbytes, headers=headers)
            except Exception as exc:
                self._release_shared_memory(regions, registered=False)
                raise to_inference_error(exc, None, self.url) from exc
            infer_input.set_shared_memory(region, array.nbytes)
        return regions

    def _release_shared_memory(self, regions: list[tuple[str, Any]], registered: bool = True) -> None:
        import tritonclient.utils.shared_memory as shm

        for region, handle in regions:
            if registered:
                try:
                    self._transport.unregister_system_shared_memory(region, headers=self.settings.admin_headers())
                except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
                    log.warning("could not unregister shared memory %s: %s", region, exc)
            shm.destroy_shared_memory_region(handle)


class AsyncTritonClient(_ClientCore):
    """asyncio client (tritonclient.http.aio or tritonclient.grpc.aio); same methods as `TritonClient`, awaited."""

    def __init__(self, settings: ClientSettings | None = None, concurrency: int = 100) -> None:
        super().__init__(settings)
        self._module = transport_module(self.settings.protocol, asynchronous=True)
        self._transport = make_transport(self.settings, asynchronous=True, concurrency=concurrency)
        self._kwargs = call_kwargs(self.settings)

    async def __aenter__(self) -> AsyncTritonClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection."""
        await self._transport.close()

    @property
    def transport(self) -> Any:
        """The underlying `tritonclient` aio client (for the load tester's hot loop)."""
        return self._transport

    @property
    def module(self) -> Any:
        """The `tritonclient` aio module in use (its `InferInput` / `InferRequestedOutput` classes)."""
        return self._module

    async def _retrying(self, call: Callable[[], Awaitable[T]], model: str | None) -> T:
        started, attempt, delay = time.monotonic(), 0, self.settings.backoff_s
        while True:
            attempt += 1
            try:
                return await call()
            except (InferenceError, UserInputError):
                raise
            except Exception as exc:
                error, next_delay = self._next_delay(exc, model, attempt, started, delay)
                if next_delay is None:
                    raise error from exc
                await asyncio.sleep(delay)
                delay = next_delay

    async def is_ready(self) -> bool:
        """True when the server answers ready (no retries)."""
        try:
            return bool(await self._transport.is_server_ready(**self._kwargs))
        except Exception:  # noqa: BLE001
            return False

    async def model_info(self, model: str) -> ModelInfo:
        """What the server says about `model` (cached)."""
        if model not in self._infos:
            kwargs = dict(self._kwargs, as_json=True) if self.settings.protocol == "grpc" else {}

            async def describe() -> ModelInfo:
                metadata = await self._transport.get_model_metadata(model, **kwargs)
                config = await self._transport.get_model_config(model, **kwargs)
                return ModelInfo.from_server(metadata, config)

            try:
                self._infos[model] = await self._retrying(describe, model)
            except InferenceError as exc:
                raise self._metadata_error(exc, model, self.url) from exc
        return self._infos[model]

    async def statistics(self, model: str) -> dict[str, Any]:
        """Triton's inference statistics for `model` (JSON form)."""
        kwargs = dict(self._kwargs, as_json=True) if self.settings.protocol == "grpc" else {}
        return await self._retrying(lambda: self._transport.get_inference_statistics(model, **kwargs), model)

    async def labels(self, model: str, output: str = OUTPUT_NAME) -> tuple[str, ...]:
        """Class labels of `model`'s `output` (see `TritonClient.labels`)."""
        key = f"{model}/{output}"
        if key not in self._labels:
            info = await self.model_info(model)
            count = self._num_classes(info, output)
            if not info.output(output).labelled:
                self._labels[key] = tuple(str(i) for i in range(count))
            else:
                result = await self.infer(
                    model, self._probe_inputs(info), outputs=[output], class_count={output: count}
                )
                self._labels[key] = self._labels_from_probe(info, result[output])
        return self._labels[key]

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        class_count: Mapping[str, int] | None = None,
    ) -> dict[str, np.ndarray]:
        """Raw inference (see `TritonClient.infer`); shared memory is not used by the asyncio client."""
        info = await self.model_info(model)
        info.validate_inputs(inputs)
        infer_inputs, requested = build_request(self._module, info, inputs, outputs, class_count)
        result = await self._retrying(
            lambda: self._transport.infer(model, infer_inputs, outputs=requested, **self._kwargs), model
        )
        return {_output_name(r): result.as_numpy(_output_name(r)) for r in requested}

    async def classify(
        self, model: str, images: ImageSource | Sequence[ImageSource], top_k: int = 5
    ) -> list[Prediction]:
        """See `TritonClient.classify`."""
        info = await self.model_info(model)
        images = _as_list(images)
        pixels = self.pixels_for(info, images)
        labels = await self.labels(model)
        sources = _sources(images)
        predictions: list[Prediction] = []
        for chunk in self._chunks(info, len(images)):
            started = time.perf_counter()
            result = await self.infer(model, {info.input().name: pixels[chunk]}, outputs=[OUTPUT_NAME])
            latency_ms = (time.perf_counter() - started) * 1e3
            predictions += predictions_from_logits(result[OUTPUT_NAME], labels, top_k, latency_ms, sources[chunk])
        return predictions

    async def classify_video(self, model: str, video: str | Path | bytes | np.ndarray, top_k: int = 5) -> Prediction:
        """See `TritonClient.classify_video`."""
        info = await self.model_info(model)
        if info.layout != "NTCHW":
            raise UserInputError(f"model {model!r} takes {info.layout} images, expected a video model (NTCHW)")
        return (await self.classify(model, [video], top_k=top_k))[0]

    async def timeline(
        self,
        model: str,
        video: str | Path | bytes,
        *,
        window_s: float | None = None,
        stride_s: float | None = None,
        top_k: int = 3,
        clips_per_request: int = 0,
    ) -> Timeline:
        """See `TritonClient.timeline`."""
        name = timeline_name(model)
        inputs = timeline_inputs(read_bytes(video), window_s, stride_s, top_k, clips_per_request)
        result = (await self.infer(name, inputs, outputs=[TIMELINE_OUTPUT]))[TIMELINE_OUTPUT]
        return Timeline.model_validate_json(result.reshape(-1)[0])

    async def explain(self, model: str, image: ImageSource) -> tuple[Prediction, np.ndarray]:
        """See `TritonClient.explain`."""
        explain_model = explain_name(model)
        info = await self.model_info(explain_model)
        pixels = self.pixels_for(info, [image])
        started = time.perf_counter()
        result = await self.infer(explain_model, {info.input().name: pixels})
        latency_ms = (time.perf_counter() - started) * 1e3
        labels = await self.labels(explain_model)
        prediction = predictions_from_logits(result[OUTPUT_NAME], labels, 5, latency_ms, _sources([image]))[0]
        return prediction, result[ATTENTION_OUTPUT_NAME][0]


TIMELINE_OUTPUT = "timeline"


def timeline_inputs(
    payload: bytes, window_s: float | None, stride_s: float | None, top_k: int, clips_per_request: int
) -> dict[str, np.ndarray]:
    """The inputs of `NAME_timeline` (a negative window/stride asks for the server's default)."""
    if top_k < 1 or clips_per_request < 0:
        raise UserInputError(f"expected top_k >= 1 and clips_per_request >= 0, got {top_k} and {clips_per_request}")
    return {  # one video per request: batch 1, each input one value
        "video": np.array([[payload]], dtype=np.object_),
        "window_s": np.array([[-1.0 if window_s is None else window_s]], dtype=np.float32),
        "stride_s": np.array([[-1.0 if stride_s is None else stride_s]], dtype=np.float32),
        "top_k": np.array([[top_k]], dtype=np.int32),
        "clips_per_request": np.array([[clips_per_request]], dtype=np.int32),
    }


def _output_name(requested: Any) -> str:
    return str(requested.name())


def _predictions_from_classification(
    entries: np.ndarray, batch: int, num_classes: int, top_k: int, latency_ms: float, sources: Sequence[str]
) -> list[Prediction]:
    """Predictions from full classification strings (all classes), scores re-normalised with softmax."""
    rows = np.asarray(entries).reshape(batch, -1)
    predictions = []
    for row, source in zip(rows, sources):
        parsed = parse_classification(row)
        logits = np.full(num_classes, -np.inf)
        labels = [str(i) for i in range(num_classes)]
        for value, index, label in parsed:
            logits[index], labels[index] = value, label
        predictions += predictions_from_logits(logits[None], labels, top_k, latency_ms, [source])
    return predictions


__all__ = [
    "AsyncTritonClient",
    "ModelNotFoundError",
    "Prediction",
    "TritonClient",
    "build_request",
    "make_transport",
    "softmax",
    "transport_module",
]
