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

from attnserve.defaults import RUNS_DIR
from bench import BENCH_REPORTS_DIR


def measure(runs_dir: Path, name: str, count: int) -> dict[str, Any]:
    """Export, serve, and score in-process vs HTTP vs gRPC (module docstring)."""
    from attnserve.clients.client import TritonClient
    from attnserve.clients.settings import ClientSettings
    from attnserve.detection import DEFAULT_SCORE_THRESHOLD, coco_map, coco_results_of
    from attnserve.export.pipeline import ExportOptions, export_model
    from attnserve.models.checkpoint import resolve
    from attnserve.models.detection_train import detect_files
    from attnserve.models.scenes import FILE_SIZES, write_scene_files
    from attnserve.serving.flags import TritonEndpoints
    from attnserve.serving.pipelines import write_pipeline_entries
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.serving.server import TritonServer

    model, spec = resolve(name, runs_dir)
    with tempfile.TemporaryDirectory(prefix="attnserve-detection-") as scratch:
        root = Path(scratch)
        report = export_model(
            name, root / "repo", runs_dir=runs_dir, options=ExportOptions(explain=False, optimize=False)
        )
        write_pipeline_entries(report.spec, root / "repo")
        view, loaded, _ = build_runtime_repository(root / "repo", root / "runtime")
        files, truth = write_scene_files(root / "scenes", count)
        local = detect_files(model, spec, files, DEFAULT_SCORE_THRESHOLD)
        scores: dict[str, Any] = {"in_process": coco_map(truth, coco_results_of(local, spec.io.labels))}
        server = TritonServer(view, models=loaded, endpoints=TritonEndpoints.any_free(), work_dir=root / "srv")
        with server:
            for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
                started = time.perf_counter()
                with TritonClient(ClientSettings(url=url, protocol=protocol)) as client:  # type: ignore[arg-type]
                    answers = client.detect(name, files)
                scores[protocol] = {
                    **coco_map(truth, coco_results_of(answers, spec.io.labels)),
                    "seconds": time.perf_counter() - started,
                }
    return {"model": name, "scenes": count, "sizes": FILE_SIZES, "score_threshold": DEFAULT_SCORE_THRESHOLD,
            "scores": scores, "load_average": os.getloadavg()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    parser.add_argument("--name", default="det_shapes")
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--out", type=Path, default=BENCH_REPORTS_DIR / "detection_served.json")
    args = parser.parse_args()
    result = measure(args.runs_dir, args.name, args.scenes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for where, score in result["scores"].items():
        print(f"{where:<11} mAP@[.5:.95] {score['map']:.4f}  mAP@.5 {score['map50']:.4f}  mAP@.75 {score['map75']:.4f}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
