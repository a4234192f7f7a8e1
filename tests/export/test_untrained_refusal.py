"""No silent random weights: exporting a trainable deployable without its checkpoint is refused, naming the path."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnserve.cli import main


def test_export_without_a_checkpoint_fails_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runz"  # a typo'd --runs-dir: nothing there
    code = main(["export", "vit_shapes", "--runs-dir", str(runs), "--repository", str(tmp_path / "repo")])
    assert code == 1
    error = capsys.readouterr().err
    assert str(runs / "vit_shapes" / "model.safetensors") in error and "--untrained" in error
    assert not (tmp_path / "repo").exists()  # refused before any work


def test_names_are_checked_before_any_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "vit_tiny_patch16_224", "vit_shapez", "--repository", str(tmp_path / "repo")])
    assert code == 1
    assert "vit_shapez" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()  # the valid first name was not exported either


@pytest.mark.slow
def test_untrained_opt_in_exports_and_the_entry_says_untrained(tmp_path: Path) -> None:
    from attnserve.repository.entries import read_entry_spec

    repository = tmp_path / "repo"
    arguments = ["export", "vit_shapes", "--untrained", "--runs-dir", str(tmp_path / "runs")]
    arguments += ["--repository", str(repository), "--no-optimize", "--no-explain", "--no-fp16"]
    assert main(arguments) == 0
    assert read_entry_spec(repository / "vit_shapes").trained is False  # what the served config carries


def test_a_bad_hf_name_is_refused_before_loading_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "--hf", str(tmp_path / "missing"), "--hf-name", "MyVit", "--repository", str(tmp_path)])
    assert code == 1
    error = capsys.readouterr().err
    assert "'MyVit'" in error and "'myvit'" in error and "Traceback" not in error
