"""The one core of the typed clients, free of I/O: what to ask Triton and what its answers mean.

Every client operation (model info, statistics, labels, infer, classify, classify_encoded, classify_video,
timeline, explain, shared memory, retrying) is written once here as a *plan*: a generator that yields the
steps it needs performed and receives each step's result, or has the step's exception thrown into it.

    Call(Operation.GET_MODEL_METADATA, ("vit_digits",))  ->  the transport's answer (or its exception)
    Sleep(0.05)                                          ->  None, after the pause between two attempts

A plan never opens a socket and never sleeps. `TritonClient` drives plans with tritonclient's blocking
client and `time.sleep`, `AsyncTritonClient` with its asyncio client and `asyncio.sleep`
(`attnserve.clients.client`); each does only that. The design is the "sans-I/O" one of h11 and
hyper-h2, with generators so that multi-step operations (describe, then probe the labels, then infer in
chunks; register shared memory, infer, unregister) read top to bottom.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeAlias, TypedDict, TypeVar

import numpy as np

from attnserve.boxes import BoxMapping
from attnserve.clients.media import ImageSource, image_to_tensor, open_image, read_bytes, video_to_tensor
from attnserve.clients.model_info import ModelInfo
from attnserve.clients.predictions import Prediction, parse_classification, predictions_from_logits
from attnserve.clients.settings import ClientSettings
from attnserve.clients.status import ServerUnavailableError, is_retryable, to_inference_error
from attnserve.detection import CandidateSelection, Detection, detections_from_candidates, select_candidates
from attnserve.errors import InferenceError, ShapeError, UserInputError
from attnserve.spec import (
    ATTENTION_OUTPUT_NAME,
    DETECTION_OUTPUTS,
    DETECTIONS_OUTPUT,
    OUTPUT_NAME,
    TIMELINE_TENSORS,
    explain_name,
    pipeline_name,
    timeline_name,
)
from attnserve.video import Timeline

log = logging.getLogger(__name__)

T = TypeVar("T")

VideoSource: TypeAlias = str | Path | bytes | np.ndarray
"""A video file, its encoded bytes, or a uint8 (T, C, H, W) array."""
Encoded: TypeAlias = str | Path | bytes
"""An encoded image or video: a file or its bytes."""
Inputs: TypeAlias = Mapping[str, np.ndarray]
"""Input arrays by tensor name."""
ClassCount: TypeAlias = Mapping[str, int]
"""Per output: how many top classes to return as Triton classification strings (0 = the raw tensor)."""


class TimelineOptions(TypedDict, total=False):
    """How `timeline` cuts and labels a video (every option may be left out)."""

    window_s: float | None
    """Window length (default: the model's frames at the video's rate; 0 = the whole video)."""
    stride_s: float | None
    """Step between windows (default: half the window)."""
    top_k: int
    """Labels per segment and for the video (default 3)."""
    clips_per_request: int
    """Clips per request to the classifier (default 0 = its max batch; 1 = unbatched)."""


class ModelNotFoundError(InferenceError):
    """The server does not serve (or has not loaded) the requested model."""


# steps and plans ------------------------------------------------------------------------------------------
class Operation(str, Enum):
    """The tritonclient `InferenceServerClient` methods the plans call (the same names in its HTTP and gRPC,
    blocking and asyncio forms; a test checks each one exists on all four)."""

    IS_SERVER_READY = "is_server_ready"
    GET_MODEL_METADATA = "get_model_metadata"
    GET_MODEL_CONFIG = "get_model_config"
    GET_INFERENCE_STATISTICS = "get_inference_statistics"
    INFER = "infer"
    REGISTER_SYSTEM_SHARED_MEMORY = "register_system_shared_memory"
    UNREGISTER_SYSTEM_SHARED_MEMORY = "unregister_system_shared_memory"


@dataclass(frozen=True)
class Call:
    """One call of a tritonclient `InferenceServerClient` method (the same names in its blocking and asyncio forms)."""

    method: Operation
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def on(self, transport: Any) -> Any:
        """Make the call on `transport`: its answer (blocking client) or an awaitable of it (asyncio client)."""
        return getattr(transport, self.method.value)(*self.args, **self.kwargs)


@dataclass(frozen=True)
class Sleep:
    """A pause before the next attempt; each client sleeps with its own primitive."""

    seconds: float


Step: TypeAlias = Call | Sleep
Plan: TypeAlias = Generator[Step, Any, T]
"""An operation written once: yields `Step`s, is sent each one's result, returns the operation's result."""


class PlanSteps(Generic[T]):
    """Walks a plan for a client: iterate for the steps to perform, report each one's result or exception.

    A client's driver is then a short loop (see `TritonClient._run`); the plan decides what an exception means
    (retry after a `Sleep`, clean up, or raise to the caller).
    """

    result: T
    """The plan's result, once the iteration has ended."""

    def __init__(self, plan: Plan[T]) -> None:
        self._plan = plan
        self._reply: Any = None
        self._error: Exception | None = None

    def __iter__(self) -> Iterator[Step]:
        while True:
            error, self._error = self._error, None
            try:
                step = self._plan.throw(error) if error is not None else self._plan.send(self._reply)
            except StopIteration as done:
                self.result = done.value
                return
            self._reply = None
            yield step

    def reply(self, value: Any) -> None:
        """The current step's result, sent into the plan when the iteration resumes."""
        self._reply = value

    def fail(self, error: Exception) -> None:
        """The current step's exception, thrown into the plan when the iteration resumes."""
        self._error = error

    def settle(self, perform: Callable[[Step], Any], step: Step) -> None:
        """Perform `step` with the blocking `perform(step)` and report its result or exception."""
        try:
            self.reply(perform(step))
        except Exception as exc:  # noqa: BLE001 - handed to the plan, which retries, cleans up or raises it
            self.fail(exc)


# the core ------------------------------------------------------------------------------------------------
@dataclass
class _Region:
    """A system shared-memory region holding one input (`handle` from tritonclient.utils.shared_memory)."""

    name: str
    handle: Any
    registered: bool = False


class ClientCore:
    """The plans of every client operation, and the state the two clients share (settings, caches).

    Args:
        settings: the client's settings (URL, protocol, timeouts, retry policy, shared memory, tokens).
        module: the tritonclient module in use (its `InferInput` / `InferRequestedOutput`).
    """

    def __init__(self, settings: ClientSettings, module: Any) -> None:
        self.settings = settings
        self.module = module
        self.url = settings.resolved_url
        self._kwargs = call_kwargs(settings)
        self._json_kwargs = dict(self._kwargs, as_json=True) if settings.protocol == "grpc" else {}
        self._infos: dict[str, ModelInfo] = {}
        self._labels: dict[str, tuple[str, ...]] = {}

    # retry policy ---------------------------------------------------------------------------------------
    def retrying(self, call: Call, model: str | None) -> Plan[Any]:
        """`call`, retried with exponential backoff while the failure is retryable and the budget lasts.

        Raises:
            ServerUnavailableError: retries or budget spent (`attempts` says how many were made).
            InferenceError: a failure that retrying cannot help (Triton's status kept).
        """
        started, attempt, delay = time.monotonic(), 0, self.settings.backoff_s
        while True:
            attempt += 1
            try:
                return (yield call)
            except Exception as exc:  # noqa: BLE001 - every transport failure is sorted by `_backoff`
                next_delay = self._backoff(exc, model, attempt, started, delay)
            yield Sleep(delay)
            delay = next_delay

    def _backoff(self, exc: Exception, model: str | None, attempt: int, started: float, delay: float) -> float:
        """The delay after the next one, or the error to raise when `exc` is final or the budget is spent."""
        error = to_inference_error(exc, model, self.url)
        if not is_retryable(error):
            raise error from exc
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
        return min(delay * 2, self.settings.backoff_max_s)

    # server and model description -----------------------------------------------------------------------
    def is_ready(self) -> Plan[bool]:
        """True when the server answers ready (no retries: "not ready" is the answer to any failure)."""
        try:
            return bool((yield Call(Operation.IS_SERVER_READY, kwargs=self._kwargs)))
        except Exception:  # noqa: BLE001 - see the docstring
            return False

    def model_info(self, model: str) -> Plan[ModelInfo]:
        """What the server says about `model` (metadata + config, cached).

        Raises:
            ModelNotFoundError: the server does not serve `model` (or it is not ready).
        """
        if model not in self._infos:
            try:
                metadata = yield from self.retrying(
                    Call(Operation.GET_MODEL_METADATA, (model,), self._json_kwargs), model
                )
                config = yield from self.retrying(Call(Operation.GET_MODEL_CONFIG, (model,), self._json_kwargs), model)
            except InferenceError as exc:
                error = metadata_error(exc, model, self.url)
                if error is exc:
                    raise  # as it is: `raise exc from exc` would replace its cause (the transport's exception)
                raise error from exc
            self._infos[model] = ModelInfo.from_server(metadata, config)
        return self._infos[model]

    def statistics(self, model: str) -> Plan[dict[str, Any]]:
        """Triton's inference statistics for `model` (JSON form)."""
        statistics = yield from self.retrying(
            Call(Operation.GET_INFERENCE_STATISTICS, (model,), self._json_kwargs), model
        )
        return dict(statistics)

    def labels(self, model: str, output: str = OUTPUT_NAME) -> Plan[tuple[str, ...]]:
        """Class labels of `model`'s `output`, read through Triton's classification extension (cached)."""
        key = f"{model}/{output}"
        if key not in self._labels:
            info = yield from self.model_info(model)
            count = num_classes(info, output)
            if not info.output(output).labelled:
                self._labels[key] = tuple(str(i) for i in range(count))
            else:
                probe = probe_inputs(info)
                result = yield from self.infer(model, probe, outputs=[output], class_count={output: count})
                self._labels[key] = labels_from_probe(result[output])
        return self._labels[key]

    # inference ------------------------------------------------------------------------------------------
    def infer(
        self, model: str, inputs: Inputs, outputs: Sequence[str] | None = None, class_count: ClassCount | None = None
    ) -> Plan[dict[str, np.ndarray]]:
        """Raw inference: validated arrays in, arrays out (all outputs unless `outputs` names some).

        With `settings.shared_memory`, inputs of at least `shared_memory_min_bytes` travel through system
        shared memory (same host only; the API is restricted: `settings.admin_token`).

        Raises:
            UserInputError: inputs do not match the model's metadata (nothing is sent).
            InferenceError: the server refused or failed the request (after retries when retryable).
        """
        info = yield from self.model_info(model)
        info.validate_inputs(inputs)
        infer_inputs, requested = build_request(self.module, info, inputs, outputs, class_count)
        call = Call(Operation.INFER, (model, infer_inputs), dict(self._kwargs, outputs=requested))
        if self.settings.shared_memory:
            result = yield from self._through_shared_memory(call, infer_inputs, inputs, model)
        else:
            result = yield from self.retrying(call, model)
        names = [str(r.name()) for r in requested]
        return {name: result.as_numpy(name) for name in names}

    def classify(
        self, model: str, images: ImageSource | Sequence[ImageSource], top_k: int = 5
    ) -> Plan[list[Prediction]]:
        """Classify images (paths, bytes, PIL images, uint8 arrays) or, for video models, videos.

        Images are decoded and transformed client-side as the model declares; batches larger than the
        model's `max_batch_size` are split into several requests.
        """
        info = yield from self.model_info(model)
        images = as_list(images)
        pixels = pixels_for(info, images)
        labels = yield from self.labels(model)
        sources = source_names(images)
        predictions: list[Prediction] = []
        for chunk in batch_slices(info, len(images)):
            started = time.perf_counter()
            result = yield from self.infer(model, {info.input().name: pixels[chunk]}, outputs=[OUTPUT_NAME])
            latency_ms = (time.perf_counter() - started) * 1e3
            predictions += predictions_from_logits(result[OUTPUT_NAME], labels, top_k, latency_ms, sources[chunk])
        return predictions

    def classify_video(self, model: str, video: VideoSource, top_k: int = 5) -> Plan[Prediction]:
        """Classify one video (file, bytes or a uint8 (T,C,H,W) array) with a video model."""
        info = yield from self.model_info(model)
        if info.layout != "NTCHW":
            raise UserInputError(f"model {model!r} takes {info.layout} images, expected a video model (NTCHW)")
        predictions = yield from self.classify(model, [video], top_k=top_k)
        return predictions[0]

    def classify_encoded(
        self, pipeline_model: str, payloads: Sequence[Encoded], top_k: int = 5
    ) -> Plan[list[Prediction]]:
        """Send encoded image/video bytes to a `NAME_pipeline` ensemble (server-side decoding).

        More payloads than the pipeline's `max_batch_size` are split into several requests, as `classify` does.
        """
        info = yield from self.model_info(pipeline_model)
        tensor, output = info.input(), info.output()
        encoded = [read_bytes(p) for p in payloads]
        # (N, 1, ...): one encoded payload per sample, whatever the sample rank the pipeline declares
        array = np.array(encoded, dtype=np.object_).reshape((len(encoded),) + (1,) * len(info.sample_shape(tensor)))
        count = num_classes(info, output.name)
        sources = source_names(payloads)
        predictions: list[Prediction] = []
        for chunk in batch_slices(info, len(encoded)):
            started = time.perf_counter()
            result = yield from self.infer(
                pipeline_model, {tensor.name: array[chunk]}, outputs=[output.name], class_count={output.name: count}
            )
            latency_ms = (time.perf_counter() - started) * 1e3
            size = chunk.stop - chunk.start
            entries = result[output.name]
            predictions += predictions_from_classification(entries, size, count, top_k, latency_ms, sources[chunk])
        return predictions

    def detect(self, model: str, images: Encoded | Sequence[Encoded]) -> Plan[list[list[Detection]]]:
        """Detections per image (files or encoded bytes) from a detector's `NAME_pipeline` (`model` may name
        either): `{label, score, box: [x0, y0, x1, y1]}` in each image's own pixels, best first."""
        pipeline = pipeline_name(model)
        info = yield from self.model_info(pipeline)
        payloads = [read_bytes(source) for source in as_list(images)]
        answers: list[list[Detection]] = []
        for chunk in batch_slices(info, len(payloads)):
            array = np.array(payloads[chunk], dtype=np.object_).reshape(-1, 1)  # (n, 1): one encoded image each
            result = yield from self.infer(pipeline, {info.input().name: array}, outputs=[DETECTIONS_OUTPUT])
            answers += [json.loads(answer) for answer in result[DETECTIONS_OUTPUT].reshape(-1)]
        return answers

    def explain_detections(self, model: str, image: ImageSource) -> Plan[tuple[list[Detection], np.ndarray]]:
        """A DETR-style detector's detections of one image (boxes in its pixels) and, per detection, the map of
        where its object query cross-attended (gh, gw) over the model's input frame, from `NAME_explain`."""
        explain_model = explain_name(model)
        info = yield from self.model_info(explain_model)
        pixels = pixels_for(info, [image])
        result = yield from self.infer(explain_model, {info.input().name: pixels})
        boxes, scores, classes = (result[name][0] for name in DETECTION_OUTPUTS)
        original = open_image(image)
        height, width = info.image_size
        mapping = BoxMapping.for_image(original.width, original.height, width, height, info.preprocessing)
        labels = tuple(info.spec_io.get("labels", ()))
        keep = select_candidates(scores, boxes, classes)
        every = CandidateSelection(score_threshold=0.0)  # `keep` already chose them
        found = detections_from_candidates(boxes[keep], scores[keep], classes[keep], labels, mapping, every)
        return found, result[ATTENTION_OUTPUT_NAME][0][keep]

    def timeline(self, model: str, video: Encoded, options: TimelineOptions) -> Plan[Timeline]:
        """Label a video of any length with `NAME_timeline` (see `TritonClient.timeline`)."""
        payload = read_bytes(video)
        window_s, stride_s = options.get("window_s"), options.get("stride_s")
        inputs = timeline_inputs(
            payload, window_s, stride_s, options.get("top_k", 3), options.get("clips_per_request", 0)
        )
        result = yield from self.infer(timeline_name(model), inputs, outputs=[TIMELINE_TENSORS.output])
        return Timeline.model_validate_json(result[TIMELINE_TENSORS.output].reshape(-1)[0])

    def explain(self, model: str, image: ImageSource) -> Plan[tuple[Prediction, np.ndarray]]:
        """Prediction and attention map of one image/video, from `NAME_explain` (`model` may name either)."""
        explain_model = explain_name(model)
        info = yield from self.model_info(explain_model)
        pixels = pixels_for(info, [image])
        started = time.perf_counter()
        result = yield from self.infer(explain_model, {info.input().name: pixels})
        latency_ms = (time.perf_counter() - started) * 1e3
        labels = yield from self.labels(explain_model)
        prediction = predictions_from_logits(result[OUTPUT_NAME], labels, 5, latency_ms, source_names([image]))[0]
        return prediction, result[ATTENTION_OUTPUT_NAME][0]

    # shared memory --------------------------------------------------------------------------------------
    def _through_shared_memory(
        self, call: Call, infer_inputs: Sequence[Any], inputs: Mapping[str, np.ndarray], model: str
    ) -> Plan[Any]:
        """`call` with its large inputs moved to registered system shared memory, released afterwards."""
        regions: list[_Region] = []
        try:
            yield from self._place_in_shared_memory(infer_inputs, inputs, regions)
            result = yield from self.retrying(call, model)
        except GeneratorExit:  # the plan was abandoned (e.g. a cancelled task): no step may run now
            _destroy(regions)
            raise
        except Exception:
            yield from self._release(regions)
            raise
        yield from self._release(regions)
        return result

    def _place_in_shared_memory(
        self, infer_inputs: Sequence[Any], inputs: Mapping[str, np.ndarray], regions: list[_Region]
    ) -> Plan[None]:
        """Move inputs of at least `shared_memory_min_bytes` into regions registered with the server."""
        import tritonclient.utils.shared_memory as shm

        for infer_input in infer_inputs:
            array = inputs[infer_input.name()]
            if array.nbytes < self.settings.shared_memory_min_bytes or array.dtype == np.object_:
                continue  # small inputs are cheaper inline; BYTES tensors have no fixed layout to share
            name = f"attnserve_{os.getpid()}_{uuid.uuid4().hex[:12]}"
            region = _Region(name, shm.create_shared_memory_region(name, f"/{name}", array.nbytes))
            regions.append(region)
            shm.set_shared_memory_region(region.handle, [np.ascontiguousarray(array)])
            register = Call(
                Operation.REGISTER_SYSTEM_SHARED_MEMORY, (name, f"/{name}", array.nbytes), self._admin_kwargs()
            )
            try:
                yield register
            except Exception as exc:  # wrapped, Triton's status kept
                raise to_inference_error(exc, None, self.url) from exc
            region.registered = True
            infer_input.set_shared_memory(name, array.nbytes)

    def _release(self, regions: Sequence[_Region]) -> Plan[None]:
        """Unregister the registered regions (a failure is logged, never hides the result) and free them all."""
        try:
            for region in regions:
                if not region.registered:
                    continue
                try:
                    yield Call(Operation.UNREGISTER_SYSTEM_SHARED_MEMORY, (region.name,), self._admin_kwargs())
                except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
                    log.warning("could not unregister shared memory %s: %s", region.name, exc)
        finally:
            _destroy(regions)

    def _admin_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a restricted (shared-memory) call: the admin token's header."""
        return {"headers": self.settings.admin_headers()}


def _destroy(regions: Sequence[_Region]) -> None:
    import tritonclient.utils.shared_memory as shm

    for region in regions:
        shm.destroy_shared_memory_region(region.handle)


# requests ------------------------------------------------------------------------------------------------
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
    """`InferInput`s and `InferRequestedOutput`s (of tritonclient `module`) for a validated request."""
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
        tensors = [_video_tensor(image, frames, height, width, info) for image in images]
    else:
        preprocessing = info.preprocessing  # the served spec's declared transform, as in training
        tensors = [image_to_tensor(image, height, width, info.channels, preprocessing) for image in images]
    return np.stack(tensors)


def _video_tensor(source: Any, frames: int, height: int, width: int, info: ModelInfo) -> np.ndarray:
    channels = info.channels
    if isinstance(source, np.ndarray) and source.ndim == 4:
        if source.shape != (frames, channels, height, width):
            raise ShapeError(f"expected a video array of shape {(frames, channels, height, width)}, got {source.shape}")
        return source
    return video_to_tensor(source, frames, height, width, channels, info.preprocessing)


def probe_inputs(info: ModelInfo) -> dict[str, np.ndarray]:
    """Smallest valid request (zeros, batch 1) used to read the labels through the classification extension."""
    probe = {}
    for tensor in info.inputs:
        shape = [1 if d < 0 else d for d in tensor.shape]
        if tensor.datatype == "BYTES":
            raise UserInputError(f"model {info.name!r} takes bytes; ask its tensor model for labels instead")
        probe[tensor.name] = np.zeros(shape, dtype=tensor.numpy_dtype)
    return probe


def timeline_inputs(
    payload: bytes, window_s: float | None, stride_s: float | None, top_k: int, clips_per_request: int
) -> dict[str, np.ndarray]:
    """The inputs of `NAME_timeline` (a negative window/stride asks for the server's default)."""
    if top_k < 1 or clips_per_request < 0:
        raise UserInputError(f"expected top_k >= 1 and clips_per_request >= 0, got {top_k} and {clips_per_request}")
    return {  # one video per request: batch 1, each input one value
        TIMELINE_TENSORS.video: np.array([[payload]], dtype=np.object_),
        TIMELINE_TENSORS.window: np.array([[-1.0 if window_s is None else window_s]], dtype=np.float32),
        TIMELINE_TENSORS.stride: np.array([[-1.0 if stride_s is None else stride_s]], dtype=np.float32),
        TIMELINE_TENSORS.top_k: np.array([[top_k]], dtype=np.int32),
        TIMELINE_TENSORS.clips: np.array([[clips_per_request]], dtype=np.int32),
    }


def batch_slices(info: ModelInfo, count: int) -> list[slice]:
    """`count` samples cut into requests of at most the model's `max_batch_size` (1 for an unbatched model)."""
    step = info.max_batch_size if info.max_batch_size > 0 else 1
    return [slice(i, min(i + step, count)) for i in range(0, count, step)]


def as_list(images: Any) -> list[Any]:
    """One source or a sequence of them, as a list."""
    if isinstance(images, (str, Path, bytes)) or not isinstance(images, Sequence):
        return [images]
    return list(images)


def source_names(images: Sequence[Any]) -> list[str]:
    """What each prediction reports as its source: a file's path as given (two folders may hold the same name),
    else `#i`."""
    return [str(image) if isinstance(image, (str, Path)) else f"#{i}" for i, image in enumerate(images)]


# responses -----------------------------------------------------------------------------------------------
def metadata_error(exc: InferenceError, model: str, url: str) -> InferenceError:
    """`ModelNotFoundError` when the server does not know `model` (or it is not ready), else `exc` unchanged."""
    text = str(exc).lower()
    if not isinstance(exc, ServerUnavailableError) and (
        "unknown model" in text or "not found" in text or "not ready" in text
    ):
        return ModelNotFoundError(
            f"expected a model {model!r} served (and READY) at {url}, the server says: {exc.detail}",
            status=exc.status,
            model=model,
        )
    return exc


def num_classes(info: ModelInfo, output: str) -> int:
    """The class count of a classification output (its last dimension)."""
    return int(info.sample_shape(info.output(output))[-1])


def labels_from_probe(entries: np.ndarray) -> tuple[str, ...]:
    """All labels from the classification strings of a probe that asked for every class."""
    parsed = parse_classification(entries)
    labels = [""] * (max(i for _, i, _ in parsed) + 1)
    for _, index, label in parsed:
        labels[index] = label
    return tuple(labels)


def predictions_from_classification(
    entries: np.ndarray, batch: int, count: int, top_k: int, latency_ms: float, sources: Sequence[str]
) -> list[Prediction]:
    """Predictions from full classification strings (all `count` classes), scores re-normalised with softmax."""
    rows = np.asarray(entries).reshape(batch, -1)
    logits = np.full((batch, count), -np.inf)
    labels = [str(i) for i in range(count)]
    for position, row in enumerate(rows):
        for value, index, label in parse_classification(row):
            logits[position, index], labels[index] = value, label
    return predictions_from_logits(logits, labels, top_k, latency_ms, sources)
