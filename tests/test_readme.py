"""The documented snippets run as written: the README's Python client and plain curl call, and the export API of
docs/fine_tuning.md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
OWN_MODEL_DOC = Path(__file__).resolve().parents[1] / "docs" / "fine_tuning.md"


def _blocks(language: str, page: Path = README) -> list[str]:
    """Fenced blocks of `page` whose info string is `language` ("" = plain fences)."""
    blocks: list[str] = []
    current: list[str] | None = None
    current_language = ""
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, current_language = [], line[3:].strip()
            else:
                if current_language == language:
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _block_containing(language: str, needle: str, page: Path = README) -> str:
    matches = [block for block in _blocks(language, page) if needle in block]
    assert len(matches) == 1, (
        f"expected one ```{language} block containing {needle!r} in {page.name}, found {len(matches)}"
    )
    return matches[0]


@pytest.mark.triton
def test_python_client_snippet_runs_as_written(triton_server, tmp_path: Path) -> None:
    from attnserve.models.data import write_samples

    snippet = _block_containing("python", "TritonClient(ClientSettings())")
    sample = write_samples("cnn_cbam_digits", tmp_path / "samples", 1)[0]
    shutil.copy(sample, tmp_path / "digit.png")
    env = {**os.environ, "ATTNSERVE_URL": triton_server.grpc_url, "ATTNSERVE_PROTOCOL": "grpc"}
    result = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    label, score, latency, unit = result.stdout.split()
    assert label in triton_server.specs["cnn_cbam_digits"].io.labels
    assert 0.0 <= float(score) <= 1.0 and unit == "ms"


@pytest.mark.triton
def test_curl_snippet_runs_as_written(triton_server) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed on this machine")
    snippet = next(block for block in _blocks("") if block.startswith("curl "))
    host, port = triton_server.http_url.rsplit(":", 1)
    # The snippet targets the default port; the test server listens on a free one.
    command = snippet.replace("127.0.0.1:8000", f"{host}:{port}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    (output,) = response["outputs"]
    assert output["name"] == "logits" and output["shape"] == [1, 3]
    # classification extension: "score:index:label" strings, labels from labels.txt
    labels = [entry.split(":")[2] for entry in output["data"]]
    assert set(labels) <= set(triton_server.specs["cnn_cbam_digits"].io.labels)


def test_export_module_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attnserve.models import create_model

    snippet = _block_containing("python", "export_module(my_model", OWN_MODEL_DOC)
    monkeypatch.chdir(tmp_path)
    my_model = create_model("vit_tiny_patch16_224", embed_dim=16, depth=1, num_heads=2)
    namespace = {"my_model": my_model}
    exec(compile(snippet, OWN_MODEL_DOC.name, "exec"), namespace)
    report = namespace["report"]
    assert report.ok
    assert report.onnx.attention_nodes == 1
    assert (tmp_path / "model_repository" / "my_vit" / "config.pbtxt").is_file()
