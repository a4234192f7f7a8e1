"""Every deployable of the registry (tiny architecture overrides) exports, verifies at 1, 2 and max, and
gets repository entries whose configs parse as Triton's ModelConfig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnserve.catalogue import DEPLOYABLE_NAMES, get_deployable
from attnserve.export.onnx_graph import batch_dim_name
from attnserve.export.pipeline import ExportOptions, export_model
from attnserve.models.registry import model_family, tiny_arch_overrides
from attnserve.repository.config import parse_pbtxt


def _overrides(name: str) -> dict:
    overrides = tiny_arch_overrides(name)
    if model_family(get_deployable(name).arch) != "cnn_attention":
        overrides["depth"] = 2  # two blocks, so "one Attention node per block" is not a coincidence
    return overrides


EXPLAIN_CHECKED = {"vit_digits", "cnn_cbam_digits", "timesformer_motion"}
"""One explain export per model family file (image ViT, CNN+CBAM, video): the others share their
`forward_with_attention` code path; left out to keep the suite fast on 2 cores."""


SLOW_EXPORTS = {"timesformer_motion", "temporal_motion", "det_shapes"}
"""The slowest exports (8-17 s each on 2 shared cores): in `make test`, left out of `make test-fast`."""


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_EXPORTS else name for name in DEPLOYABLE_NAMES]
)
def test_deployable_exports_verifies_and_writes_entries(name: str, tmp_path: Path) -> None:
    overrides = _overrides(name)
    explain = name in EXPLAIN_CHECKED
    options = ExportOptions(optimize=False, fp16=False, explain=explain)
    report = export_model(name, tmp_path / "repo", runs_dir=tmp_path / "runs", options=options, **overrides)
    spec = report.spec
    assert report.ok, [s for s in report.stages if s.status == "failed"]
    assert report.parity is not None and report.parity.ok
    assert report.parity.batch_sizes == sorted({1, 2, spec.serving.max_batch_size})
    assert batch_dim_name(report.onnx.onnx_path) == "batch"
    if model_family(spec.arch) != "cnn_attention":  # transformers: one fused ONNX Attention per block
        assert report.onnx.attention_nodes == overrides["depth"] * (2 if spec.arch.startswith("timesformer") else 1)
    saved = json.loads((report.work_dir / "export_report.json").read_text())
    assert saved["ok"] is True and [s["stage"] for s in saved["stages"]][:2] == ["onnx", "verify"]

    config = parse_pbtxt((tmp_path / "repo" / name / "config.pbtxt").read_text())
    assert config.max_batch_size == spec.serving.max_batch_size and list(config.input[0].dims) == list(
        spec.io.input_shape
    )
    if explain:
        explain_config = parse_pbtxt((tmp_path / "repo" / spec.explain_name / "config.pbtxt").read_text())
        assert [o.name for o in explain_config.output] == ["logits", "attention_map"]
        assert report.explain_parity is not None and report.explain_parity.ok
