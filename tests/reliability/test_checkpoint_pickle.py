"""Checkpoints are never unpickled: a malicious pickle is refused and its payload never runs.

Each payload, when unpickled, creates a marker file (`builtins.open(marker, "w")`). The first test proves the
payload is live (unpickling it in the test does create its marker); the others point the project's loaders at
such files under every name a PyTorch checkpoint usually has and assert (1) an error is raised and (2) the
marker file does not exist afterwards. A last test scans the library source for unpickling calls.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import pytest
import torch

from attnserve.catalogue import default_spec
from attnserve.errors import AttnserveError, DataError
from attnserve.models.checkpoint import WEIGHTS_FILENAME, load_run, resolve
from attnserve.models.registry import tiny_arch_overrides

PICKLE_NAMES = ("model.pt", "model.pth", "pytorch_model.bin", "checkpoint.pt")
REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARY_DIRS = ("attnserve", "models", "export", "serving", "clients")


class _MarkerPayload:
    """Unpickling this object calls `open(marker, "w")`: the file's existence proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _write_pickle(path: Path, marker: Path) -> Path:
    """A raw pickle (protocol 2, like old `torch.save`) whose unpickling creates `marker`."""
    path.write_bytes(pickle.dumps({"state_dict": _MarkerPayload(marker)}, protocol=2))
    return path


def _write_torch_zip(path: Path, marker: Path) -> Path:
    """A `torch.save`-style zip archive whose `data.pkl` creates `marker` when unpickled."""
    torch.save({"state_dict": _MarkerPayload(marker)}, path)
    assert zipfile.is_zipfile(path)
    return path


def _run_dir(tmp_path: Path, name: str = "vit_digits") -> Path:
    """A run folder with a valid `spec.json` and no safetensors weights."""
    run_dir = tmp_path / "runs" / name
    default_spec(name, **tiny_arch_overrides(name)).save(run_dir)
    return run_dir


def test_payload_is_live(tmp_path: Path) -> None:
    """Control: the payloads do run code when unpickled, so their markers are meaningful."""
    marker = tmp_path / "control_marker"
    pickle.loads(_write_pickle(tmp_path / "control.pt", marker).read_bytes())
    assert marker.exists()
    zip_marker = tmp_path / "control_zip_marker"
    _write_torch_zip(tmp_path / "control_zip.pt", zip_marker)
    torch.load(tmp_path / "control_zip.pt", weights_only=False)  # the unsafe call our loaders must never make
    assert zip_marker.exists()


@pytest.mark.parametrize("filename", PICKLE_NAMES)
@pytest.mark.parametrize("writer", [_write_pickle, _write_torch_zip], ids=["raw_pickle", "torch_zip"])
def test_pickle_checkpoint_is_refused(tmp_path: Path, filename: str, writer: object) -> None:
    """A run folder holding only a pickle checkpoint is refused by `load_run` and `resolve`; nothing runs."""
    run_dir = _run_dir(tmp_path)
    marker = tmp_path / "pwned"
    writer(run_dir / filename, marker)  # type: ignore[operator]

    with pytest.raises(AttnserveError, match=re.escape(WEIGHTS_FILENAME)):
        load_run(run_dir)
    with pytest.raises(AttnserveError, match=re.escape(WEIGHTS_FILENAME)):
        resolve(run_dir)
    with pytest.raises((AttnserveError, ValueError, OSError)):
        load_run(run_dir / filename)  # pointing straight at the file is refused too
    assert not marker.exists(), "a pickle checkpoint was unpickled"


@pytest.mark.parametrize("writer", [_write_pickle, _write_torch_zip], ids=["raw_pickle", "torch_zip"])
def test_pickle_renamed_to_safetensors_is_refused(tmp_path: Path, writer: object) -> None:
    """A pickle disguised under the safetensors name fails to parse as safetensors; it is never unpickled."""
    run_dir = _run_dir(tmp_path)
    marker = tmp_path / "pwned"
    writer(run_dir / WEIGHTS_FILENAME, marker)  # type: ignore[operator]

    with pytest.raises(DataError, match=r"expected a safetensors file at .*cannot read it"):
        load_run(run_dir)
    assert not marker.exists(), "a pickle disguised as safetensors was unpickled"


def test_library_never_calls_unpickling_apis() -> None:
    """No library module calls `pickle.load(s)`, `torch.load` or `weights_only=False` (tests excepted)."""
    pattern = re.compile(
        r"\b(pickle\.loads?|cPickle\.loads?|torch\.load|dill\.loads?|joblib\.load)\s*\(|weights_only\s*=\s*False"
    )
    offenders = []
    for folder in LIBRARY_DIRS:
        for source in sorted((REPO_ROOT / folder).rglob("*.py")):
            for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
                if pattern.search(line):
                    offenders.append(f"{source.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "unpickling calls in library code:\n" + "\n".join(offenders)


@pytest.mark.parametrize("filename", ["pytorch_model.bin", "model.bin"])
def test_hf_folder_with_pickle_weights_is_refused(tmp_path: Path, filename: str) -> None:
    """A Hugging Face folder whose weights are a pickle (`*.bin`) is refused by the export's HF import."""
    transformers = pytest.importorskip("transformers")
    from attnserve.errors import UserInputError
    from attnserve.export.hf_import import load_hf_classifier

    folder = tmp_path / "hf_vit"
    folder.mkdir()
    transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    ).to_json_file(str(folder / "config.json"))
    marker = tmp_path / "pwned"
    _write_torch_zip(folder / filename, marker)
    with pytest.raises(UserInputError, match="pickle"):
        load_hf_classifier(folder)
    assert not marker.exists(), "a pickle in a Hugging Face folder was unpickled"
