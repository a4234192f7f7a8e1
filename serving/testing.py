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
    repository: Path | str, names: Sequence[str] | None = None, *, tiny: bool = True
) -> tuple[dict[str, ModelSpec], dict[str, Path]]:
    """Export deployables into `repository` with their pipelines.

    Args:
        repository: target model repository (created when missing).
        names: deployable names; None = every deployable.
        tiny: use each family's tiny architecture overrides (fast tests) instead of the full size.

    Returns:
        `(specs, onnx_paths)`: deployable name -> spec, and entry name -> the ONNX file in the repository.
    """
    from attnserve.export.repository import write_model_entry
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
            export_onnx(build_model(spec), spec, onnx_path)
            entry_dir = write_model_entry(spec, onnx_path, repository)
            write_pipeline_entries(spec, repository)
            specs[name] = spec
            onnx_paths[name] = max(entry_dir.glob("*/model.onnx"), key=lambda p: int(p.parent.name))
            logger.info("exported %s into %s", name, repository)
    return specs, onnx_paths
