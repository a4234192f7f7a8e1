"""A small but real model repository for tests and start-up measurements: deployables, exported.

`build_deployables_repository` exports each deployable through the export pipeline
(`attnserve.export.pipeline.export_model`: ONNX, verification, explain twin) — tiny variants for tests,
full size for the start-up measurement — and adds its `_preprocess` / `_pipeline` entries. Weights are
random (untrained) for tiny variants; full-size exports use `runs/NAME/` when a training run exists.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from attnserve.errors import ExportError
from attnserve.spec import ModelSpec

logger = logging.getLogger(__name__)


def build_deployables_repository(
    repository: Path | str,
    names: Sequence[str] | None = None,
    *,
    tiny: bool = True,
    explain: bool = True,
    optimize: bool = False,
    runs_dir: Path | str = Path("runs"),
) -> tuple[dict[str, ModelSpec], dict[str, Path]]:
    """Export deployables into `repository` with their pipelines.

    Args:
        repository: target model repository (created when missing).
        names: deployable names; None = every deployable.
        tiny: use each family's tiny architecture overrides (fast tests) instead of the full size.
        explain: also write `NAME_explain` (outputs `logits` and `attention_map`).
        optimize: run the export's ONNX Runtime optimisation stage (slower; off for tests).
        runs_dir: where full-size exports look for training runs (tiny variants never use them).

    Returns:
        `(specs, onnx_paths)`: deployable name -> spec, and entry name -> the ONNX file in the repository.

    Raises:
        ExportError: a stage of the export failed (the message names it).
    """
    from attnserve.catalogue import DEPLOYABLE_NAMES
    from attnserve.export.pipeline import ExportOptions, export_model
    from attnserve.models.registry import tiny_arch_overrides
    from attnserve.serving.pipelines import write_pipeline_entries

    repository = Path(repository)
    specs: dict[str, ModelSpec] = {}
    onnx_paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="attnserve-export-") as scratch:
        for name in names or DEPLOYABLE_NAMES:
            overrides = tiny_arch_overrides(name) if tiny else {}
            report = export_model(
                name,
                repository,
                runs_dir=Path(scratch) if tiny else Path(runs_dir),
                options=ExportOptions(explain=explain, optimize=optimize),
                **overrides,
            )
            if not report.ok:
                failed = [f"{s.stage}: {s.reason}" for s in report.stages if s.status == "failed"]
                raise ExportError(f"exporting {name} failed: {failed}")
            spec = report.spec
            write_pipeline_entries(spec, repository)
            specs[name] = spec
            for entry_name, entry_dir in report.entries.items():
                onnx_path = served_onnx_path(entry_dir)
                if onnx_path is not None:
                    onnx_paths[entry_name] = onnx_path
            logger.info("exported %s into %s (%s)", name, repository, sorted(report.entries))
    return specs, onnx_paths


def served_onnx_path(entry_dir: Path) -> Path | None:
    """The ONNX file the CPU runner of the runtime view opens for an entry (None for non-ONNX entries)."""
    from attnserve.repository.entries import served_file

    return served_file(entry_dir)
