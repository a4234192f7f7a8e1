"""A detector served for real: trained briefly here, exported, served by Triton as `det_shapes_pipeline`.

Held-out scenes are written as non-square PNG and JPEG files larger than the model's input; the mAP of the served
answers (HTTP and gRPC, boxes in the files' own pixels) equals the mAP of the same files run in-process through the
same preprocessing, model and post-processing. Also: the empty scene, the async client, the batcher forming
batches on the detection model, and bad payloads refused with the server still serving.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from PIL import Image
from support.media import png_declaring

from attnserve.boxes import BoxMapping
from attnserve.clients.client import AsyncTritonClient, TritonClient
from attnserve.clients.loadtest import settled_reading
from attnserve.clients.settings import ClientSettings
from attnserve.detection import DEFAULT_SCORE_THRESHOLD, coco_map, coco_results_of
from attnserve.errors import InferenceError
from attnserve.models.detection_train import detect_files
from attnserve.spec import ModelSpec

pytestmark = pytest.mark.triton

NAME = "det_shapes"
SMALL = dict(embed_dim=32, depth=1, num_heads=2, stem_width=12)
"""A smaller detector than the deployable's: it reaches a non-trivial mAP within the test's training budget."""
TRAIN_MINUTES = 0.3
SCENES = 24
SIZES = ((192, 128), (240, 160), (150, 100))
"""Non-square files at the model's aspect (96x64 is 1.5): squash keeps the shapes, the boxes scale 1.56-2.5x."""


@dataclass(frozen=True)
class Served:
    server: Any
    spec: ModelSpec
    model: torch.nn.Module
    files: list[Path]
    truth: dict[str, Any]
    hf_folders: dict[str, Path]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from support.hf_detectors import save_tiny_detectors
    from support.servers import local_server

    from attnserve.catalogue import default_spec
    from attnserve.export.pipeline import ExportOptions, export_hf, export_model
    from attnserve.models.checkpoint import resolve
    from attnserve.models.detection_train import train_detector
    from attnserve.models.scenes import write_scene_files
    from attnserve.serving.pipelines import write_pipeline_entries
    from attnserve.serving.runtime_view import build_runtime_repository

    root = tmp_path_factory.mktemp("detector")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_detector(NAME, default_spec(NAME, **SMALL), TRAIN_MINUTES, 0, root / "runs", train_samples=1500,
                       test_samples=20)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    options = ExportOptions(explain=False, optimize=False)
    report = export_model(root / "runs" / NAME, root / "repo", runs_dir=root / "runs", options=options)
    write_pipeline_entries(report.spec, root / "repo")
    hf_folders = save_tiny_detectors(root / "hf")
    for hf_name, folder in hf_folders.items():
        options = ExportOptions(explain=hf_name == "hf_detr", optimize=False)  # DETR: NAME_explain (cross-attention)
        hf_report = export_hf(folder, root / "repo", name=hf_name, runs_dir=root / "runs", options=options)
        write_pipeline_entries(hf_report.spec, root / "repo")
    model, spec = resolve(root / "runs" / NAME, root / "runs")
    view, loaded, _ = build_runtime_repository(root / "repo", root / "runtime")
    files, truth = write_scene_files(root / "scenes", SCENES, seed=424242, sizes=SIZES)
    with local_server(view, loaded, root / "server") as server:
        yield Served(server, spec, model.eval(), files, truth, hf_folders)


def _in_process(served: Served) -> list[dict[str, Any]]:
    """The files through the same preprocessing, the PyTorch model and the same post-processing, in-process."""
    return coco_results_of(
        detect_files(served.model, served.spec, served.files, DEFAULT_SCORE_THRESHOLD), served.spec.io.labels
    )


def _client(served: Served, protocol: str) -> TritonClient:
    url = served.server.http_url if protocol == "http" else served.server.grpc_url
    return TritonClient(ClientSettings(url=url, protocol=protocol))  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_map_equals_in_process_map_in_original_pixels(served: Served, protocol: str) -> None:
    with _client(served, protocol) as client:
        answers = client.detect(NAME, served.files)
    served_map = coco_map(served.truth, coco_results_of(answers, served.spec.io.labels))
    in_process = coco_map(served.truth, _in_process(served))
    assert in_process["map50"] > 0.3, f"the briefly trained detector found too little for a real check: {in_process}"
    assert abs(served_map["map"] - in_process["map"]) <= 0.005, (served_map, in_process)
    assert abs(served_map["map50"] - in_process["map50"]) <= 0.005, (served_map, in_process)
    widths = {image["id"]: image["width"] for image in served.truth["images"]}
    assert all(0 <= d["box"][2] <= widths[i] for i, found in enumerate(answers) for d in found)


def test_async_client_answers_as_the_blocking_one(served: Served) -> None:
    settings = ClientSettings(url=served.server.grpc_url, protocol="grpc")

    async def detect() -> list:
        client = AsyncTritonClient(settings)
        try:
            return await client.detect(NAME, served.files[:4])
        finally:
            await client.close()

    with _client(served, "grpc") as client:
        expected = client.detect(NAME, served.files[:4])
    assert asyncio.run(detect()) == expected


def test_an_empty_scene_answers_an_empty_list(served: Served) -> None:
    from attnserve.models.scenes import Scene, render

    buffer = io.BytesIO()
    render(Scene((), (40, 40, 40), 7), 210, 140).save(buffer, "PNG")
    with _client(served, "http") as client:
        assert client.detect(NAME, buffer.getvalue()) == [[]]


def test_the_batcher_forms_batches_on_the_detection_model(served: Served) -> None:
    spec, requests = served.spec, 32
    client = grpcclient.InferenceServerClient(served.server.grpc_url)

    async def counts() -> tuple[int, int]:
        stats = (await asyncio.to_thread(client.get_inference_statistics, NAME)).model_stats[0]
        return int(stats.inference_count), int(stats.execution_count)

    inferences_before, executions_before = asyncio.run(settled_reading(counts))
    finished, errors = threading.Semaphore(0), []

    def on_result(result: Any, error: Any) -> None:
        errors.append(error)
        finished.release()

    pixels = np.random.default_rng(0).integers(0, 256, (1, *spec.io.input_shape), dtype=np.uint8)
    for _ in range(requests):  # fired without waiting: they meet in Triton's queue
        tensor = grpcclient.InferInput("pixels", [1, *spec.io.input_shape], "UINT8")
        tensor.set_data_from_numpy(pixels)
        client.async_infer(NAME, [tensor], on_result)
    for _ in range(requests):
        assert finished.acquire(timeout=120)
    assert errors == [None] * requests
    inferences, executions = asyncio.run(
        settled_reading(counts, lambda after: after[0] - inferences_before >= requests, timeout_s=30.0)
    )
    assert inferences - inferences_before == requests
    assert executions - executions_before < requests, "Triton ran every request alone: no dynamic batching"
    client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_payloads_are_refused_and_the_server_keeps_serving(served: Served, protocol: str) -> None:
    good = served.files[0].read_bytes()
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    bad = {
        b"": "empty image payload",
        good[: len(good) // 2]: "cannot decode image",
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)): "cannot decode image",
        gif.getvalue(): "unsupported image format 'GIF'",
        png_declaring(8000, 8000): "exceeds the limit",
    }
    with _client(served, protocol) as client:
        for payload, fragment in bad.items():
            with pytest.raises(InferenceError) as refused:
                client.detect(NAME, payload)
            assert fragment in str(refused.value), (fragment, str(refused.value))
            assert str(refused.value.status) in ("400", "StatusCode.INVALID_ARGUMENT"), str(refused.value)
        assert isinstance(client.detect(NAME, good)[0], list)  # still serving


@pytest.mark.parametrize("hf_name", ["hf_detr", "hf_yolos"])
def test_hf_detector_answers_what_transformers_post_processing_gives(served: Served, hf_name: str) -> None:
    """Same file: the served detections equal `processor.post_process_object_detection(..., target_sizes=...)` on
    the model's own outputs (boxes within 1 pixel, same labels, scores within 0.01), on non-square images."""
    from transformers import AutoModelForObjectDetection

    from attnserve.models.scenes import make_scenes, render

    folder = served.hf_folders[hf_name]
    processor = _pil_processor(hf_name).from_pretrained(folder)
    model = AutoModelForObjectDetection.from_pretrained(folder).eval()
    compared = 0
    with _client(served, "grpc") as client:
        for scene, (width, height) in zip(make_scenes(3, seed=99), ((150, 100), (97, 181), (320, 120)), strict=True):
            buffer = io.BytesIO()
            render(scene, width, height).save(buffer, "PNG")
            image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
            with torch.inference_mode():
                outputs = model(**processor(images=image, return_tensors="pt"))
            expected = processor.post_process_object_detection(
                outputs, threshold=DEFAULT_SCORE_THRESHOLD, target_sizes=[(height, width)]
            )[0]
            answer = sorted(client.detect(hf_name, buffer.getvalue())[0], key=lambda d: -d["score"])
            order = expected["scores"].argsort(descending=True)
            assert len(answer) == len(order), (answer, expected)
            for detection, index in zip(answer, order.tolist(), strict=True):
                assert detection["label"] == model.config.id2label[int(expected["labels"][index])]
                assert abs(detection["score"] - float(expected["scores"][index])) <= 0.01
                box = expected["boxes"][index].numpy().clip(0, [width, height, width, height])  # served boxes clip
                np.testing.assert_allclose(detection["box"], box, atol=1.0)
            compared += len(answer)
    assert compared > 0, f"{hf_name}: no detection above the threshold: the comparison would be vacuous"


def _pil_processor(hf_name: str) -> Any:
    if hf_name == "hf_detr":
        from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

        return DetrImageProcessorPil
    from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil

    return YolosImageProcessorPil


def test_detr_explains_each_detection_with_its_cross_attention(served: Served, tmp_path: Path) -> None:
    """`hf_detr_explain`: the same detections as the pipeline, each with the map of where its query attended,
    drawn under its box on the original (non-square) image."""
    from attnserve.clients.drawing import write_detection_attention
    from attnserve.models.scenes import make_scenes, render

    path = tmp_path / "scene.png"
    render(make_scenes(1, seed=5)[0], 210, 90).save(path)
    with _client(served, "grpc") as client:
        found, maps = client.explain_detections("hf_detr", path)
        served_answer = client.detect("hf_detr", path)[0]
        info = client.model_info("hf_detr_explain")
    assert [d["label"] for d in found] == [d["label"] for d in served_answer] and found
    for explained, answered in zip(found, served_answer, strict=True):
        np.testing.assert_allclose(explained["box"], answered["box"], atol=0.01)
        assert abs(explained["score"] - answered["score"]) <= 1e-3
    assert maps.shape == (len(found), 8, 12) and (maps >= 0).all()
    np.testing.assert_allclose(maps.reshape(len(found), -1).max(axis=1), 1.0, atol=1e-5)
    mapping = BoxMapping.for_image(210, 90, 96, 64, info.preprocessing)
    picture = write_detection_attention(path, found, maps, mapping, info.image_size, tmp_path / "explain.png")
    assert Image.open(picture).size == (210 * min(len(found), 6), 90)
