"""Served mAP of a trained detector: held-out scenes as non-square PNG and JPEG files, through `NAME_pipeline`.

    python -m bench.detection_served                          # runs/det_shapes, 300 scenes
    python -m bench.detection_served --runs-dir runs --scenes 500

Exports the trained run (`attnserve train det_shapes` first), starts the embedded Triton server on 127.0.0.1
with the model and its pipeline, writes held-out scenes (another seed than training) at several non-square
sizes larger than the model's 96x64 input, half PNG and half JPEG (quality 95), and scores with pycocotools:

- in-process: each file decoded and resized by `to_chw` (the model's preprocessing), the PyTorch model, the same
  post-processing (threshold, top-k, boxes mapped back to the file's pixels);
- served over HTTP and over gRPC: `TritonClient.detect` (the server decodes, runs and maps).

Ground truth is in each file's own pixels, so a box mapped to the wrong frame loses its IoU. JSON goes to
`reports/bench/detection_served.json`; the machine's load average is recorded (the CPU may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = ((192, 128), (240, 160), (150, 100), (288, 192))
SCENE_SEED = 777_001


def _write_scenes(out_dir: Path, count: int) -> tuple[list[Path], dict[str, Any]]:
    from attnserve.models.scenes import coco_ground_truth, make_scenes, render

    scenes = make_scenes(count, SCENE_SEED)
    sizes = [SIZES[index % len(SIZES)] for index in range(count)]
    files = []
    for index, (scene, (width, height)) in enumerate(zip(scenes, sizes, strict=True)):
        path = out_dir / f"scene_{index}.{'png' if index % 2 else 'jpg'}"
        render(scene, width, height).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
        files.append(path)
    return files, coco_ground_truth(scenes, sizes)


def _in_process(model: Any, spec: Any, files: list[Path], threshold: float) -> list[dict[str, Any]]:
    import torch
    from PIL import Image

    from attnserve.boxes import BoxMapping
    from attnserve.detection import coco_results, detections_from_candidates
    from attnserve.preprocessing import to_chw

    results: list[dict[str, Any]] = []
    for image_id, path in enumerate(files):
        image = Image.open(path)
        pixels = torch.from_numpy(to_chw(image, spec.channels, spec.height, spec.width, spec.preprocessing))
        with torch.inference_mode():
            boxes, scores, classes = (t[0].numpy() for t in model(pixels[None]))
        mapping = BoxMapping.for_image(image.width, image.height, spec.width, spec.height, spec.preprocessing)
        found = detections_from_candidates(boxes, scores, classes, spec.labels, mapping, threshold)
        results += coco_results(image_id, found, spec.labels)
    return results


def measure(runs_dir: Path, name: str, count: int) -> dict[str, Any]:
    """Export, serve, and score in-process vs HTTP vs gRPC (module docstring)."""
    from attnserve.clients.client import TritonClient
    from attnserve.clients.settings import ClientSettings
    from attnserve.detection import DEFAULT_SCORE_THRESHOLD, coco_map, coco_results
    from attnserve.export.pipeline import export_model
    from attnserve.models.checkpoint import resolve
    from attnserve.serving.pipelines import write_pipeline_entries
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.serving.server import TritonServer

    model, spec = resolve(name, runs_dir)
    with tempfile.TemporaryDirectory(prefix="attnserve-detection-") as scratch:
        root = Path(scratch)
        report = export_model(name, root / "repo", runs_dir=runs_dir, explain=False, optimize=False)
        write_pipeline_entries(report.spec, root / "repo")
        view, loaded, _ = build_runtime_repository(root / "repo", root / "runtime")
        (root / "scenes").mkdir()
        files, truth = _write_scenes(root / "scenes", count)
        scores: dict[str, Any] = {
            "in_process": coco_map(truth, _in_process(model.eval(), spec, files, DEFAULT_SCORE_THRESHOLD))
        }
        server = TritonServer(view, models=loaded, http_port=0, grpc_port=0, metrics_port=0, work_dir=root / "srv")
        with server:
            for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
                started = time.perf_counter()
                with TritonClient(ClientSettings(url=url, protocol=protocol)) as client:  # type: ignore[arg-type]
                    answers = client.detect(name, files)
                results = [r for i, found in enumerate(answers) for r in coco_results(i, found, spec.labels)]
                scores[protocol] = {**coco_map(truth, results), "seconds": time.perf_counter() - started}
    return {"model": name, "scenes": count, "sizes": SIZES, "score_threshold": DEFAULT_SCORE_THRESHOLD,
            "scores": scores, "load_average": os.getloadavg()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--name", default="det_shapes")
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("reports/bench/detection_served.json"))
    args = parser.parse_args()
    result = measure(args.runs_dir, args.name, args.scenes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for where, score in result["scores"].items():
        print(f"{where:<11} mAP@[.5:.95] {score['map']:.4f}  mAP@.5 {score['map50']:.4f}  mAP@.75 {score['map75']:.4f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
