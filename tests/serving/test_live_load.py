"""Models added while serving: `attnserve load NAME` makes the running server answer for a model exported after
its start (its `--pipeline` too), through Triton's model control, without a restart."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnserve.cli import main

pytestmark = pytest.mark.triton

NEW_MODEL = "vit_digits"  # not one of the fixture's deployables: absent when the server started


def _unload(triton_server, names: list[str]) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(triton_server.http_url)
    try:
        for name in names:
            client.unload_model(name, headers=triton_server.server.admin_headers)
    finally:
        client.close()


def test_a_model_exported_while_serving_answers_after_load(triton_server, tmp_path: Path, monkeypatch) -> None:
    from attnserve.clients.client import ModelNotFoundError, TritonClient
    from attnserve.clients.settings import ClientSettings
    from attnserve.export.pipeline import ExportOptions, export_model
    from attnserve.models.registry import tiny_arch_overrides
    from attnserve.security import ADMIN_TOKEN_ENV

    image = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 24), dtype=np.uint8)).save(image)
    settings = ClientSettings(url=triton_server.http_url, protocol="http", retries=0)
    with TritonClient(settings) as client, pytest.raises(ModelNotFoundError):
        client.classify(NEW_MODEL, [image])  # not served yet

    repository = triton_server.repository
    entries = [NEW_MODEL, f"{NEW_MODEL}_preprocess", f"{NEW_MODEL}_pipeline"]
    overrides = tiny_arch_overrides(NEW_MODEL)
    options = ExportOptions(explain=False, optimize=False, fp16=False)
    report = export_model(NEW_MODEL, repository, runs_dir=tmp_path, options=options, **overrides)
    assert report.ok and not (repository / f"{NEW_MODEL}_pipeline").exists()  # export writes no pipeline entry
    try:
        arguments = ["load", NEW_MODEL, "--repository", str(repository), "--url", triton_server.http_url]
        assert main([*arguments, "--view", str(triton_server.runtime_repository)]) == 1  # no admin token
        monkeypatch.setenv(ADMIN_TOKEN_ENV, triton_server.admin_token)
        assert main([*arguments, "--view", str(triton_server.runtime_repository)]) == 0
        with TritonClient(settings) as client:
            direct = client.classify(NEW_MODEL, [image], top_k=1)[0]
            piped = client.classify_encoded(f"{NEW_MODEL}_pipeline", [image], top_k=1)[0]
        assert direct.label == piped.label and direct.score == pytest.approx(piped.score, abs=1e-5)
    finally:
        _unload(triton_server, entries[::-1])
        for name in entries:
            shutil.rmtree(repository / name, ignore_errors=True)
            shutil.rmtree(triton_server.runtime_repository / name, ignore_errors=True)


def test_load_without_a_running_serve_says_how_to_start_one(tmp_path: Path, capsys) -> None:
    (tmp_path / "repo" / "vit_shapes").mkdir(parents=True)
    (tmp_path / "repo" / "vit_shapes" / "config.pbtxt").write_text('name: "vit_shapes"\n')  # an exported entry
    assert main(["load", "vit_shapes", "--repository", str(tmp_path / "repo")]) == 1
    assert "attnserve serve" in capsys.readouterr().err


@pytest.mark.parametrize("server", ["found from its state file", "given by --url and --view"])
def test_load_of_a_model_not_exported_says_to_export_it_first(tmp_path: Path, capsys, server: str) -> None:
    repository = tmp_path / "repo"
    repository.mkdir()
    arguments = ["load", "vit_digits", "--repository", str(repository)]
    if server.startswith("given"):
        arguments += ["--url", "127.0.0.1:1", "--view", str(tmp_path)]
    assert main(arguments) == 1
    error = capsys.readouterr().err.strip()
    assert "'vit_digits' is not exported to" in error and "unknown model" not in error, error
    assert f"attnserve export vit_digits --repository {repository}" in error and len(error.splitlines()) == 1
