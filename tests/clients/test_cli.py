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
    assert "shape.png" in printed and "latency (ms)" in printed
    assert any(label in printed for label in triton_server.specs["vit_shapes"].io.labels)
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


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_unknown_model_is_one_clear_line_listing_the_served_ones(
    triton_server: Any, tmp_path, capsys, protocol: str
) -> None:
    image_path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image_path)
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    assert main(["infer", "--model", "nope", str(image_path), "--url", url, "--protocol", protocol]) == 1
    error = capsys.readouterr().err
    assert "nope" in error and "served models:" in error and "vit_shapes_pipeline" in error, error
    assert error.count("[StatusCode.") + error.count("[400]") <= 1, error  # the status once, not repeated
    assert len(error.strip().splitlines()) == 1 and "object at 0x" not in error


def test_infer_json_parses_and_says_the_model_is_untrained(triton_server: Any, tmp_path, capsys) -> None:
    image_path = tmp_path / "wide.png"
    Image.new("RGB", (64, 16), (200, 30, 30)).save(image_path)
    url = triton_server.grpc_url
    assert main(["infer", "--model", "vit_shapes", str(image_path), "--url", url, "--json", "--top-k", "2"]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)  # stdout holds the JSON only
    assert payload["model"] == "vit_shapes" and payload["trained"] is False  # the fixture serves random weights
    assert payload["predictions"][0]["source"] == str(image_path) and len(payload["predictions"][0]["top_k"]) == 2
    assert "UNTRAINED" in captured.err


def test_pipeline_chunks_more_files_than_max_batch_size_and_reports_each_requests_latency(
    triton_server: Any, tmp_path, capsys
) -> None:
    from attnserve.clients.client import TritonClient
    from attnserve.clients.settings import ClientSettings

    settings = ClientSettings(url=triton_server.grpc_url)
    with TritonClient(settings) as client:
        max_batch_size = client.model_info("vit_shapes_pipeline").max_batch_size
    rng = np.random.default_rng(7)
    files = []
    for index in range(max_batch_size + 2):  # one full request and one of 2; the same names in two folders
        folder = tmp_path / ("a" if index % 2 else "b")
        folder.mkdir(exist_ok=True)
        files.append(folder / f"{index // 2}.png")
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(files[-1])
    common = ["infer", "--model", "vit_shapes", *map(str, files), "--url", triton_server.grpc_url, "--json"]
    assert main([*common, "--pipeline"]) == 0
    piped = json.loads(capsys.readouterr().out)["predictions"]
    assert main(common) == 0
    direct = json.loads(capsys.readouterr().out)["predictions"]

    assert [p["source"] for p in piped] == [str(f) for f in files] == [p["source"] for p in direct]
    assert [p["label"] for p in piped] == [p["label"] for p in direct]
    sizes = [p["batch_size"] for p in piped]
    assert sizes == [max_batch_size] * max_batch_size + [2, 2] == [p["batch_size"] for p in direct]
    first, second = piped[:max_batch_size], piped[max_batch_size:]
    assert len({p["latency_ms"] for p in first}) == 1 and len({p["latency_ms"] for p in second}) == 1  # per request


def test_connection_refused_suggests_starting_the_server(tmp_path, capsys) -> None:
    import socket

    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    image_path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image_path)
    code = main(["infer", "--model", "vit_shapes", str(image_path), "--url", f"127.0.0.1:{port}", "--timeout-s", "2"])
    assert code == 1
    assert "attnserve serve" in capsys.readouterr().err


def test_loadtest_command_writes_json_csv_png(triton_server: Any, tmp_path, capsys) -> None:
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
    printed = capsys.readouterr().out  # piped (not a terminal): the table keeps every number in full
    level = report["levels"][0]
    assert "p99 (ms)" in printed and "…" not in printed
    assert f"{level['latency']['p99_ms']:.2f}" in printed and f"{level['achieved_rate']:,.0f}" in printed
    assert report["levels"][0]["client_success"] == report["levels"][0]["server_success"] > 0
    assert (tmp_path / "run.csv").read_text().startswith("Concurrency,Inferences/Second")
    assert (tmp_path / "run.png").stat().st_size > 0


def test_loadtest_json_parses_and_a_lone_max_windows_is_enough(triton_server: Any, tmp_path, capsys) -> None:
    arguments = ["loadtest", "--model", "cnn_cbam_digits", "--url", triton_server.grpc_url, "--concurrency", "1"]
    arguments += ["--warmup-s", "0.1", "--window-s", "0.3", "--max-windows", "2", "--out-dir", str(tmp_path), "--json"]
    assert main(arguments) == 0  # --max-windows 2 alone: --min-windows follows it down
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "cnn_cbam_digits" and report["levels"][0]["windows"] <= 2


def test_loadtest_of_an_unknown_model_over_http_is_one_line_without_unclosed_sessions(triton_server: Any) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "attnserve.cli", "loadtest", "--model", "nope", "--protocol", "http"]
    command += ["--url", triton_server.http_url, "--concurrency", "1", "--warmup-s", "0.1", "--window-s", "0.2"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Unclosed" not in result.stderr and "served models:" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
