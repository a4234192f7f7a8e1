"""Hugging Face classifiers from local config.json (random weights, offline) export and verify."""

from __future__ import annotations

from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from export_fixtures import TINY_TRANSFORMER

from attnserve.errors import UserInputError
from attnserve.export.hf_import import load_hf_classifier
from attnserve.export.torch2onnx import export_onnx
from attnserve.export.verify import verify_onnx

TINY_CONFIGS = {
    "vit": lambda: transformers.ViTConfig(**TINY_TRANSFORMER, image_size=32, patch_size=8, num_labels=5),
    "deit": lambda: transformers.DeiTConfig(
        **dict(TINY_TRANSFORMER, num_hidden_layers=3), image_size=32, patch_size=8, num_labels=5
    ),
    "mobilevit": lambda: transformers.MobileViTConfig(
        image_size=32,
        num_labels=5,
        hidden_sizes=[16, 16, 16],
        neck_hidden_sizes=[8, 8, 8, 8, 8, 16, 32],
        num_attention_heads=2,
        mlp_ratio=1.0,
    ),
    "swin": lambda: transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=5
    ),
}
# (expected exporter, expected number of fused ONNX Attention nodes)
EXPECTED = {"vit": ("dynamo", 2), "deit": ("dynamo", 3), "mobilevit": ("dynamo", 0), "swin": ("torchscript", 0)}


@pytest.mark.parametrize(
    "arch",
    # MobileViT's export takes about 20 s on 2 shared cores: in `make test`, left out of `make test-fast`
    [pytest.param(arch, marks=pytest.mark.slow) if arch == "mobilevit" else arch for arch in sorted(TINY_CONFIGS)],
)
def test_hf_classifier_exports_and_verifies(arch: str, tmp_path: Path) -> None:
    TINY_CONFIGS[arch]().save_pretrained(tmp_path / arch)
    model, spec = load_hf_classifier(tmp_path / arch / "config.json", max_batch_size=4)
    assert spec.io.labels == tuple(f"LABEL_{i}" for i in range(5)) and spec.arch == f"hf:{arch}"
    report = export_onnx(model, spec, tmp_path / f"{arch}.onnx")
    exporter, attention_nodes = EXPECTED[arch]
    assert (report.exporter, report.attention_nodes) == (exporter, attention_nodes)
    if (
        exporter == "torchscript"
    ):  # Swin: the dynamo exporter fails with a symbolic batch (docs/measured.md#dynamo-fallback)
        assert report.stages[0].status == "failed" and report.stages[0].reason
    parity = verify_onnx(report.onnx_path, model, spec)
    assert parity.ok, parity.failures
    # non-vacuous: the reference logits are far from 0 (random MobileViT would give ~1e-41 without care)
    assert min(p.reference_max_abs for p in parity.outputs) > 1e-2


def test_mobilevit_has_no_sdpa_path_and_falls_back_to_eager(tmp_path: Path) -> None:
    TINY_CONFIGS["mobilevit"]().save_pretrained(tmp_path)
    _, spec = load_hf_classifier(tmp_path, max_batch_size=2)
    assert spec.arch_args["attn_implementation"] == "eager"


def test_preprocessor_config_sets_mean_std_and_size(tmp_path: Path) -> None:
    config = TINY_CONFIGS["vit"]()
    config.id2label = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four"}
    config.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        '{"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.6, 0.7], "size": {"height": 32, "width": 32}}'
    )
    _, spec = load_hf_classifier(tmp_path, name="vit_local", max_batch_size=2)
    assert spec.name == "vit_local" and spec.io.mean == (0.1, 0.2, 0.3) and spec.io.std == (0.5, 0.6, 0.7)
    assert spec.io.labels[:2] == ("zero", "one") and spec.io.input_shape == (3, 32, 32)


def test_not_a_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="config.json"):
        load_hf_classifier(tmp_path)


def test_save_pretrained_weights_load_from_safetensors_unchanged(tmp_path: Path) -> None:
    import torch

    original = transformers.ViTForImageClassification(TINY_CONFIGS["vit"]()).eval()
    original.save_pretrained(tmp_path)  # config.json + model.safetensors
    assert (tmp_path / "model.safetensors").is_file()
    model, spec = load_hf_classifier(tmp_path, max_batch_size=2)
    assert spec.trained  # real weights: not re-initialised
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.hf_model.state_dict()[name], tensor), name


def test_pickle_only_weights_are_refused(tmp_path: Path) -> None:
    TINY_CONFIGS["vit"]().save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserInputError, match="safetensors"):
        load_hf_classifier(tmp_path)


def test_vit_explain_model_materialises_attention_while_the_main_graph_stays_fused(tmp_path: Path) -> None:
    from attnserve.export.pipeline import ExplainModel

    TINY_CONFIGS["vit"]().save_pretrained(tmp_path)
    model, spec = load_hf_classifier(tmp_path, max_batch_size=2)
    assert hasattr(model, "forward_with_attention") and model.grid == (4, 4)
    explain = ExplainModel(model).eval()
    report = export_onnx(explain, spec, tmp_path / "explain.onnx", output_names=("logits", "attention_map"))
    assert report.attention_nodes == 0 and report.op_histogram.get("Softmax", 0) == 2  # eager: probabilities out
    parity = verify_onnx(report.onnx_path, explain, spec)
    assert parity.ok, parity.failures
    assert {p.output for p in parity.outputs} == {"logits", "attention_map"}
    main_graph = export_onnx(model, spec, tmp_path / "main.onnx")
    assert main_graph.attention_nodes == 2  # the explain path did not leave the model on eager attention


def test_swin_has_no_single_cls_map_so_no_explain_path(tmp_path: Path) -> None:
    TINY_CONFIGS["swin"]().save_pretrained(tmp_path)
    model, _ = load_hf_classifier(tmp_path, max_batch_size=2)
    assert not hasattr(model, "forward_with_attention")
