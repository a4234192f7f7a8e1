"""Hugging Face video classifiers (VideoMAE, TimeSformer; small random configs built offline) through
`attnserve export --hf`, then served by the embedded Triton: pixels and encoded video give PyTorch's top-1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

import torch
from export_fixtures import TINY_TRANSFORMER

from attnserve.cli import main
from attnserve.export.hf_import import HFVideoClassifier, load_hf_classifier
from attnserve.models.synthetic import encode_video, motion_arrays
from attnserve.spec import ModelSpec

TINY_VIDEO_CONFIGS = {
    "videomae": lambda: transformers.VideoMAEConfig(
        image_size=32,
        patch_size=8,
        num_frames=4,
        tubelet_size=2,
        **TINY_TRANSFORMER,
        id2label={0: "right", 1: "left", 2: "right_and_back", 3: "left_and_back"},
        label2id={"right": 0, "left": 1, "right_and_back": 2, "left_and_back": 3},
    ),
    "timesformer": lambda: transformers.TimesformerConfig(
        image_size=32,
        patch_size=8,
        num_frames=4,
        **TINY_TRANSFORMER,
        num_labels=4,
    ),
}
# fused ONNX Attention nodes, and the attention implementation used: TimeSformer has no SDPA path in
# transformers (eager: MatMul/Softmax), named in the spec
EXPECTED = {"videomae": (2, "sdpa"), "timesformer": (0, "eager")}
PREPROCESSOR = {
    "image_mean": [0.45, 0.45, 0.45],
    "image_std": [0.225, 0.225, 0.225],
    "crop_size": {"height": 32, "width": 32},
}


@dataclass
class Exported:
    root: Path
    specs: dict[str, ModelSpec]
    reports: dict[str, dict[str, Any]]
    models: dict[str, torch.nn.Module]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Both architectures through the CLI, into one repository (with their pipeline entries)."""
    from attnserve.serving.pipelines import write_pipeline_entries

    root = tmp_path_factory.mktemp("hf_video")
    specs, reports, models = {}, {}, {}
    for arch, make_config in TINY_VIDEO_CONFIGS.items():
        folder = root / "hf" / arch
        make_config().save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
        argv = ["export", "--hf", str(folder), "--hf-name", f"hf_{arch}", "--no-optimize"]
        assert main([*argv, "--repository", str(root / "repo"), "--runs-dir", str(root / "runs")]) == 0
        reports[arch] = json.loads((root / "runs" / f"hf_{arch}" / "export" / "export_report.json").read_text())
        specs[arch] = ModelSpec.model_validate(reports[arch]["spec"])
        write_pipeline_entries(specs[arch], root / "repo")
        models[arch], _ = load_hf_classifier(
            folder, name=f"hf_{arch}", max_batch_size=specs[arch].serving.max_batch_size
        )
    return Exported(root, specs, reports, models)


@pytest.mark.parametrize("arch", sorted(TINY_VIDEO_CONFIGS))
def test_video_classifier_exports_with_verified_non_vacuous_parity(arch: str, exported: Exported) -> None:
    spec, report = exported.specs[arch], exported.reports[arch]
    assert spec.kind == "video" and spec.io.layout == "NTCHW" and spec.io.input_shape == (4, 3, 32, 32)
    assert spec.io.mean == (0.45, 0.45, 0.45) and spec.io.std == (0.225, 0.225, 0.225)
    attention_nodes, implementation = EXPECTED[arch]
    assert spec.arch_args["attn_implementation"] == implementation
    assert report["onnx"]["attention_nodes"] == attention_nodes
    assert report["parity"]["symbolic_batch"] and report["parity"]["batch_sizes"][-1] == spec.serving.max_batch_size
    assert not report["parity"]["failures"]
    assert min(p["reference_max_abs"] for p in report["parity"]["outputs"]) > 1e-2  # not vacuous
    assert isinstance(exported.models[arch], HFVideoClassifier)


def test_space_time_explain_where_every_block_attends_over_all_tokens(exported: Exported) -> None:
    """VideoMAE: per-frame maps from the attention rollout (eager copy of the weights), verified like the main
    graph; TimeSformer's divided attention has no single space-time map: skipped with the reason."""
    stages = {arch: {s["stage"]: s for s in exported.reports[arch]["stages"]} for arch in TINY_VIDEO_CONFIGS}
    assert stages["videomae"]["explain"]["status"] == "ok", stages["videomae"]["explain"]
    assert exported.reports["videomae"]["explain_attention_dims"] == [4, 4, 4]  # (T, gh, gw)
    assert not exported.reports["videomae"]["explain_parity"]["failures"]
    assert stages["timesformer"]["explain"]["status"] == "skipped"
    assert "divided attention" in stages["timesformer"]["explain"]["reason"]
    model = exported.models["videomae"]
    clip = torch.from_numpy(motion_arrays(1, seed=3)[0][:, ::2])  # (1, 4, 3, 32, 32)
    with torch.no_grad():
        logits, maps = model.forward_with_attention(clip)
        torch.testing.assert_close(logits, model(clip), atol=1e-5, rtol=1e-4)  # same weights, same answer
    assert maps.shape == (1, 4, 4, 4) and float(maps.max()) == pytest.approx(1.0)


def test_labels_come_from_id2label(exported: Exported) -> None:
    assert exported.specs["videomae"].io.labels == ("right", "left", "right_and_back", "left_and_back")
    assert exported.specs["timesformer"].io.labels == ("LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3")


@pytest.fixture(scope="module")
def hf_server(exported: Exported) -> Iterator[Any]:
    from support.servers import local_server

    from attnserve.serving.runtime_view import build_runtime_repository

    view, loaded, _ = build_runtime_repository(exported.root / "repo", exported.root / "runtime")
    with local_server(view, loaded, exported.root / "server") as server:
        yield server


@pytest.mark.triton
@pytest.mark.parametrize("arch", sorted(TINY_VIDEO_CONFIGS))
def test_served_pixels_and_encoded_video_give_pytorchs_top1(arch: str, exported: Exported, hf_server: Any) -> None:
    from attnserve.clients.client import TritonClient
    from attnserve.clients.settings import ClientSettings
    from attnserve.serving.pipelines import preprocess_target
    from attnserve.serving.python_models.preprocess import decode_video

    spec, model = exported.specs[arch], exported.models[arch]
    clips, _ = motion_arrays(3, seed=7)  # (3, 8, 3, 32, 32): 8 frames, the model takes 4
    with TritonClient(ClientSettings(url=hf_server.grpc_url)) as client:
        for clip in clips[:2]:
            pixels = clip[::2]  # (4, 3, 32, 32)
            with torch.no_grad():
                expected = spec.io.labels[int(model(torch.from_numpy(pixels[None])).argmax())]
            assert client.classify(spec.name, [pixels], top_k=1)[0].label == expected
        for clip in clips[1:]:
            payload = encode_video(clip)
            decoded = decode_video(payload, preprocess_target(spec))  # what the server's pipeline feeds the model
            with torch.no_grad():
                expected = spec.io.labels[int(model(torch.from_numpy(decoded[None])).argmax())]
            assert client.classify_encoded(spec.pipeline_name, [payload], top_k=1)[0].label == expected


def test_vivit_is_a_video_classifier_with_a_class_token_map(tmp_path: Path) -> None:
    config = transformers.VivitConfig(
        image_size=32,
        num_frames=4,
        tubelet_size=[2, 8, 8],
        **TINY_TRANSFORMER,
        num_labels=3,
    )
    config.save_pretrained(tmp_path)
    model, spec = load_hf_classifier(tmp_path, max_batch_size=2)
    assert (
        spec.kind == "video"
        and spec.io.input_shape == (4, 3, 32, 32)
        and spec.arch_args["attn_implementation"] == "sdpa"
    )
    clip = torch.from_numpy(motion_arrays(2, seed=4)[0][:, ::2])  # (2, 4, 3, 32, 32)
    with torch.no_grad():
        logits, maps = model.forward_with_attention(clip)
        torch.testing.assert_close(logits, model(clip), atol=1e-5, rtol=1e-4)
    assert maps.shape == (2, 4, 4, 4) and model.special_tokens == 1
    assert float(logits.abs().max()) > 1e-2  # random weights made non-degenerate
