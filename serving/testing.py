"""A small but real model repository for tests and start-up measurements: every deployable, exported.

`build_deployables_repository` exports each deployable (tiny variants for tests, full size for the
start-up measurement) through the export package and adds its `_preprocess` / `_pipeline` entries.
Weights are random (untrained) unless a training run is resolved by the caller.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from attnserve.spec import ModelSpec

logger = logging.getLogger(__name__)


def build_deployables_repository(
    repository: Path | str, names: Sequence[str] | None = None, *, tiny: bool = True, explain: bool = True
) -> tuple[dict[str, ModelSpec], dict[str, Path]]:
    """Export deployables into `repository` with their pipelines.

    Args:
        repository: target model repository (created when missing).
        names: deployable names; None = every deployable.
        tiny: use each family's tiny architecture overrides (fast tests) instead of the full size.
        explain: also write `NAME_explain` (outputs `logits` and `attention_map` of `forward_with_attention`).

    Returns:
        `(specs, onnx_paths)`: deployable name -> spec, and entry name -> the ONNX file in the repository.
    """
    import torch

    from attnserve.export.repository import write_explain_entry, write_model_entry
    from attnserve.spec import ATTENTION_OUTPUT_NAME, OUTPUT_NAME
    from attnserve.export.torch2onnx import export_onnx
    from attnserve.models.checkpoint import build_model
    from attnserve.models.deployables import DEPLOYABLE_NAMES, default_spec, tiny_arch_overrides
    from attnserve.serving.pipelines import write_pipeline_entries

    repository = Path(repository)
    specs: dict[str, ModelSpec] = {}
    onnx_paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="attnserve-export-") as scratch:
        for name in names or DEPLOYABLE_NAMES:
            spec = default_spec(name, **(tiny_arch_overrides(name) if tiny else {}))
            onnx_path = Path(scratch) / f"{name}.onnx"
            model = build_model(spec).eval()
            export_onnx(model, spec, onnx_path)
            entry_dir = write_model_entry(spec, onnx_path, repository)
            onnx_paths[name] = _latest_onnx(entry_dir)
            if explain:
                explain_path = Path(scratch) / f"{spec.explain_name}.onnx"
                export_onnx(_WithAttention(model), spec, explain_path, output_names=(OUTPUT_NAME, ATTENTION_OUTPUT_NAME))
                with torch.inference_mode():
                    _, attention_map = model.forward_with_attention(torch.zeros((1, *spec.input_shape), dtype=torch.uint8))
                explain_dir = write_explain_entry(spec, explain_path, repository, attention_dims=attention_map.shape[1:])
                onnx_paths[spec.explain_name] = _latest_onnx(explain_dir)
            write_pipeline_entries(spec, repository)
            specs[name] = spec
            logger.info("exported %s into %s", name, repository)
    return specs, onnx_paths


def _latest_onnx(entry_dir: Path) -> Path:
    return max(entry_dir.glob("*/model.onnx"), key=lambda p: int(p.parent.name))


def _with_attention_class():  # noqa: ANN202 - torch is imported lazily
    import torch

    class WithAttention(torch.nn.Module):
        """`forward` = the model's `forward_with_attention`: (logits, attention_map) for the explain export."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.model.forward_with_attention(pixels)

    return WithAttention


def _WithAttention(model: object) -> object:  # noqa: N802 - reads like the class it builds
    return _with_attention_class()(model).eval()
