"""The demo's typed report: what `reports/demo.json` holds, how it renders, how the README block is replaced.

The figures are one real demo run's (2 shared cores), cut to one model; the export's spec is the deployable's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from attnserve.catalogue import default_spec
from attnserve.demo_report import README_END, README_START, DemoReport, render_markdown, update_readme

LEVEL = {"concurrency": 4, "p50_ms": 4.98, "p99_ms": 9.96, "client_success": 871, "server_success": 871, "errors": {}}
MAP = {"map": 0.6829, "map50": 0.9419, "map75": 0.792}
DETECTION = {
    "model": "det_shapes", "reused_checkpoint": False, "train_seconds": 120.3, "steps": 540,
    "held_out": {"map": 0.554, "map50": 0.935, "map75": 0.61}, "held_out_scenes": 500, "files": 100,
    "sizes": [[192, 128], [240, 160]], "score_threshold": 0.3, "in_process": MAP, "http": MAP,
    "grpc": {**MAP, "map": 0.6831}, "picture": "reports/detections_det_shapes.png", "picture_detections": 4,
}  # fmt: skip
PROTOCOL = {"correct": 8, "pipeline_correct": 7, "pipeline_agrees": 7, "mean_latency_ms": 11.65, "labels": ["7"] * 8}


def _report(detection: bool = True) -> DemoReport:
    export = {
        "onnx_path": "runs/vit_digits/export/model.onnx", "exporter": "dynamo", "attention_nodes": 4,
        "parity_max_abs_diff": 1.55e-06, "parity_ok": True, "ort_optimisation": "ok", "fp16_max_abs_diff": 0.0037,
        "fp16_top1_agreement": 1.0, "tensorrt": "skipped: TensorRT is not importable here", "seconds": 26.4,
        "stages": {"onnx": "ok", "onnx2trt": "skipped"}, "spec": default_spec("vit_digits").model_dump(mode="json"),
    }  # fmt: skip
    row = {
        "variant": "onnxruntime_fp32", "status": "ok", "reason": None, "accuracy_percent": 98.33, "cosine_mean": 1.0,
        "latency_b1_ms": 0.756, "throughput_img_s": 2511.3, "within_gate": True, "picked": True, "why": "fastest",
    }  # fmt: skip
    return DemoReport.model_validate(
        {
            "generated_at": "2026-12-01T22:50:00+00:00",
            "machine": {"platform": "Linux", "processor": "Xeon, 2 cores"},
            "timings_s": {"train": 59.1},
            "training": {
                "vit_digits": {
                    "reused_checkpoint": False,
                    "test_accuracy": 0.9833,
                    "chance_accuracy": 0.1,
                    "train_seconds": 59.1,
                    "epochs": 15.0,
                }
            },  # fmt: skip
            "export": {"vit_digits": export},
            "optimize": {
                "model": "vit_digits",
                "gate_rule": "top-1",
                "batch_size": 16,
                "picked": "onnxruntime_fp32",
                "rows": [row],
            },  # fmt: skip
            "serving": {"loaded": ["vit_digits"], "skipped": {"vit_digits_trt": "no GPU"}, "ready_s": 20.5},
            "inference": {"vit_digits": {"samples": 8, "truth": ["7"] * 8, "http": PROTOCOL, "grpc": PROTOCOL}},
            "heatmap": {"image": "a.png", "png": "reports/attention_vit_digits.png", "label": "7", "map_shape": [4, 4]},
            "loadtest": {
                "vit_digits": {
                    "batching_on": [{**LEVEL, "throughput": 400.0, "avg_batch": 3.1}],
                    "batching_off": [{**LEVEL, "throughput": 200.0, "avg_batch": 1.0}],
                    "handpicked": [{**LEVEL, "throughput": 320.0, "avg_batch": 2.5}],
                    "throughput_ratio_on_vs_off": {"4": 2.0},
                    "throughput_ratio_tuned_vs_handpicked": {"4": 1.25},
                    "plot": "reports/loadtest_vit_digits_configs.png",
                }
            },
            "seconds": 300.0,
            **({"detection": DETECTION} if detection else {}),
        }
    )


def test_the_report_round_trips_through_json() -> None:
    report = _report()
    assert DemoReport.model_validate_json(report.model_dump_json()) == report
    dumped = json.loads(report.model_dump_json())
    assert dumped["loadtest"]["vit_digits"]["batching_on"][0]["throughput"] == 400.0
    assert dumped["export"]["vit_digits"]["spec"]["name"] == "vit_digits"


def test_a_misnamed_field_is_refused() -> None:
    raw = json.loads(_report().model_dump_json())
    raw["training"]["vit_digits"]["accuracy"] = raw["training"]["vit_digits"].pop("test_accuracy")
    with pytest.raises(ValidationError, match="accuracy"):
        DemoReport.model_validate(raw)


def test_markdown_carries_the_run_figures() -> None:
    markdown = render_markdown(_report())
    assert "| vit_digits | 98.3% | 4 | 1.55e-06 | 8/8 / 8/8 / 7/8 | skipped |" in markdown
    assert "| vit_digits | 4 | 400.0, 10.0 | 200.0, 10.0 | 320.0, 10.0 | 2.0x | 1.25x |" in markdown
    assert "| onnxruntime_fp32 | 98.33% | 0.76 | 2511 | True | **yes** |" in markdown
    assert "- skipped `vit_digits_trt`: no GPU" in markdown and "![attention](attention_vit_digits.png)" in markdown


def test_the_detection_section_renders_the_served_and_held_out_map() -> None:
    markdown = render_markdown(_report())
    assert "## Detection" in markdown and "![detections](detections_det_shapes.png)" in markdown
    assert "| training run, 500 held-out scenes at the input size | 0.5540 | 0.9350 | 0.6100 |" in markdown
    assert "| served, HTTP | 0.6829 | 0.9419 | 0.7920 |" in markdown
    assert "| served, gRPC | 0.6831 | 0.9419 | 0.7920 |" in markdown
    assert "HTTP +0.0000, gRPC +0.0002" in markdown
    assert "192x128, 240x160" in markdown and "540 steps in 120 s" in markdown
    raw = json.loads(_report().model_dump_json())
    raw["export"]["det_shapes"] = {
        **raw["export"]["vit_digits"],
        "spec": default_spec("det_shapes").model_dump(mode="json"),
    }
    row = "| det_shapes | mAP@.5 0.935, mAP@[.5:.95] 0.554 | 4 | 1.55e-06 | mAP@.5 0.942 / 0.942 (pipeline only) | skipped |"
    assert row in render_markdown(DemoReport.model_validate(raw))


def test_a_report_written_before_the_detector_still_validates() -> None:
    raw = json.loads(_report(detection=False).model_dump_json(exclude={"detection"}))
    assert "detection" not in raw
    report = DemoReport.model_validate(raw)
    assert report.detection is None and "## Detection" not in render_markdown(report)


def test_a_detection_section_missing_a_protocol_is_refused() -> None:
    raw = json.loads(_report().model_dump_json())
    del raw["detection"]["grpc"]
    with pytest.raises(ValidationError, match="grpc"):
        DemoReport.model_validate(raw)


def test_update_readme_replaces_only_the_generated_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold table\n{README_END}\noutro\n")
    assert update_readme(readme, "new table\n")
    assert readme.read_text() == f"intro\n{README_START}\nnew table\n{README_END}\noutro\n"
    readme.write_text("no block\n")
    assert not update_readme(readme, "new table\n") and readme.read_text() == "no block\n"
