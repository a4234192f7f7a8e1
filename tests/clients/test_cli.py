"""`attnserve infer` and `attnserve loadtest` end to end against the real server."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from attnserve.cli import main

pytestmark = pytest.mark.triton


def test_infer_prints_top_k_and_writes_heatmap(triton_server: Any, tmp_path, capsys) -> None:
    image_path = tmp_path / "shape.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(image_path)
    heatmap = tmp_path / "explain.png"
    code = main(
        [
            "infer",
            "--model",
            "vit_shapes",
            str(image_path),
            "--url",
            triton_server.http_url,
            "--protocol",
            "http",
            "--top-k",
            "2",
            "--explain",
            str(heatmap),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "shape.png" in printed and "latency ms" in printed
    assert any(label in printed for label in triton_server.specs["vit_shapes"].labels)
    assert heatmap.read_bytes()[:4] == b"\x89PNG"


def test_infer_explains_a_video_as_a_strip(triton_server: Any, tmp_path) -> None:
    frames = [Image.fromarray(np.full((32, 32, 3), 30 * i, dtype=np.uint8)) for i in range(8)]
    video_path = tmp_path / "clip.gif"
    frames[0].save(video_path, save_all=True, append_images=frames[1:], duration=40)
    heatmap = tmp_path / "clip_explain.png"
    code = main(
        [
            "infer",
            "--model",
            "timesformer_motion",
            str(video_path),
            "--url",
            triton_server.grpc_url,
            "--explain",
            str(heatmap),
        ]
    )
    assert code == 0
    assert Image.open(heatmap).width > Image.open(heatmap).height  # one panel per frame, side by side


def test_infer_unknown_model_is_one_clear_line(triton_server: Any, tmp_path, capsys) -> None:
    image_path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image_path)
    assert main(["infer", "--model", "nope", str(image_path), "--url", triton_server.grpc_url]) == 1
    assert "nope" in capsys.readouterr().err


def test_loadtest_command_writes_json_csv_png(triton_server: Any, tmp_path) -> None:
    code = main(
        [
            "loadtest",
            "--model",
            "cnn_cbam_digits",
            "--url",
            triton_server.grpc_url,
            "--concurrency",
            "2",
            "--warmup-s",
            "0.2",
            "--window-s",
            "0.4",
            "--min-windows",
            "2",
            "--max-windows",
            "2",
            "--out-dir",
            str(tmp_path),
            "--name",
            "run",
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["levels"][0]["client_success"] == report["levels"][0]["server_success"] > 0
    assert (tmp_path / "run.csv").read_text().startswith("Concurrency,Inferences/Second")
    assert (tmp_path / "run.png").stat().st_size > 0
