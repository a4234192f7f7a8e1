"""The whole export pipeline for one deployable: torch -> verified ONNX -> ORT graph -> explain -> fp16 ->
TensorRT -> Triton repository entries, each stage recorded with status, reason and timing.

Artefacts and reports go to `WORK_DIR` (default `runs/NAME/export/`):

    model.onnx  model.export.json  model.parity.json        verified fp32 graph (the portable artefact)
    model.ort.onnx  model.ort.json                          ORT-optimised graph + fusion/speed report
    explain.onnx  explain.export.json  explain.parity.json  the explain model (logits + attention_map)
    model.fp16.onnx  model.fp16.json                        fp16 graph for TensorRT, verified in ORT
    model.plan  model.layers.json  model.timing_cache       TensorRT engine (GPU hosts only)
    export_report.json                                      the `ExportReport` below

The repository receives `NAME/`, `NAME_explain/` and (when an engine was built) `NAME_trt/`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, computed_field
from torch import nn

from attnserve.defaults import REPOSITORY_DIR, RUNS_DIR
from attnserve.export.fp16 import Fp16Report, export_fp16, modelopt_available
from attnserve.export.onnx2trt import TensorRTBuildReport, build_engine
from attnserve.export.ort_optimize import OrtOptimizationReport, optimize_for_cpu
from attnserve.export.reports import OnnxExportReport, ParityReport
from attnserve.export.stages import ArtefactReport, ExportStage, Stage, StageResult, StageRunner
from attnserve.export.torch2onnx import example_pixels, export_onnx
from attnserve.export.verify import verify_onnx
from attnserve.repository.entries import write_explain_entry, write_model_entry, write_trt_entry
from attnserve.repository.layout import ONNX_FILENAME
from attnserve.spec import ATTENTION_OUTPUT_NAME, ModelSpec

logger = logging.getLogger(__name__)

REPORT_FILENAME = "export_report.json"

StageCallback = Callable[[StageResult], None]
"""Called after each stage (the CLI prints a line per stage)."""


class ExportReport(ArtefactReport):
    """Everything the pipeline did for one deployable."""

    name: str
    spec: ModelSpec
    work_dir: Path
    repository: Path
    stages: list[StageResult]
    onnx: OnnxExportReport | None = None
    parity: ParityReport | None = None
    ort: OrtOptimizationReport | None = None
    explain_onnx: OnnxExportReport | None = None
    explain_parity: ParityReport | None = None
    explain_attention_dims: list[int] | None = None
    """Per-sample dims of `NAME_explain`'s `attention_map` output, when the explain stage ran."""
    fp16: Fp16Report | None = None
    tensorrt: TensorRTBuildReport | None = None
    entries: dict[str, Path] = {}
    """Triton model name -> entry folder written in the repository."""
    seconds: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """No stage failed (skipped stages are fine: they say why)."""
        return all(stage.status != "failed" for stage in self.stages)

    def stage(self, name: ExportStage) -> StageResult | None:
        return next((s for s in self.stages if s.stage == name), None)


class ExplainModel(nn.Module):
    """Exports `forward_with_attention`: uint8 pixels -> (logits, attention_map), or for a detector (boxes, scores,
    classes, attention_map) with one map per candidate."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.forward_with_attention(pixels)


class ExportOptions(BaseModel):
    """Which optional stages run and how (the CLI's flags; `export_model` / `export_hf` / `export_module`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    opset: int | None = None
    """ONNX opset: 23 (fused ONNX `Attention`) or 18 (MatMul/Softmax, older runtimes); None = the spec's. An
    explicit one is written into the exported spec."""
    explain: bool = True
    """Export `NAME_explain` when the model has `forward_with_attention`."""
    optimize: bool = True
    """ONNX Runtime's offline graph optimisation (kept only with parity and a measured gain)."""
    fp16: bool | None = None
    """The fp16 ONNX; None = with `tensorrt` or when "fp16" is in `spec.export.precisions`."""
    tensorrt: bool = False
    """Build a TensorRT engine (skipped with the reason without TensorRT and a GPU)."""
    version: int | None = None
    """Repository version folder (default: the next free one)."""


@dataclass(frozen=True)
class _ExplainExport:
    """The typed result of the explain stage."""

    onnx: OnnxExportReport
    parity: ParityReport
    attention_dims: tuple[int, ...]

    @property
    def path(self) -> Path:
        return self.onnx.onnx_path


def _parity_failure(parity: ParityReport) -> str | None:
    return None if parity.ok else "; ".join(parity.failures)


class _ExportRun:
    """One run of the pipeline: the stages in order, each recorded by one `StageRunner`."""

    def __init__(
        self, model: nn.Module, spec: ModelSpec, repository: Path, work_dir: Path, options: ExportOptions
    ) -> None:
        self.model, self.spec, self.options = model.eval(), spec, options
        self.work_dir, self.repository = work_dir, repository
        self.onnx_path = work_dir / ONNX_FILENAME
        self.runner = StageRunner()
        self.report = ExportReport(name=spec.name, spec=spec, work_dir=work_dir, repository=repository, stages=[])
        self.started = time.perf_counter()

    def finish(self) -> ExportReport:
        self.report.stages = self.runner.results
        self.report.seconds = time.perf_counter() - self.started
        self.report.write_json(self.work_dir / REPORT_FILENAME)
        return self.report

    def run(self) -> ExportReport:
        """All stages; the ONNX export and its verification must succeed, the others record why not."""
        try:
            self.export_onnx()
            self.verify()
        except Exception:
            self.finish()
            raise
        cpu_graph = self.ort_optimize()
        explained = self.explain()
        self.tensorrt(self.fp16())
        self.write_entries(cpu_graph, explained)
        return self.finish()

    def export_onnx(self) -> None:
        """torch -> ONNX (dynamo, TorchScript fallback): both attempts land in the report."""
        self.report.onnx = self.runner.run(
            Stage(
                ExportStage.ONNX,
                lambda: export_onnx(self.model, self.spec, self.onnx_path, output_names=self.spec.output_names),
                summary=lambda r: f"exporter={r.exporter}, opset={r.opset}, attention_nodes={r.attention_nodes}",
                required=True,
            )
        )

    def verify(self) -> None:
        """Checker, symbolic batch, parity at 1, 2 and max; a mismatch raises `ParityError` (nothing written)."""
        parity = self.runner.run(
            Stage(
                ExportStage.VERIFY,
                lambda: verify_onnx(self.onnx_path, self.model, self.spec),
                failure=_parity_failure,
                summary=lambda p: f"batch_sizes={p.batch_sizes}, max_abs_diff={p.max_abs_diff():.3g}",
                required=True,
            )
        )
        self.report.parity = parity
        if parity is not None:
            parity.raise_on_failure()

    def ort_optimize(self) -> Path | None:
        """ORT offline optimisation, kept only with parity and a measured gain; returns the kept graph."""
        self.report.ort = self.runner.run(
            Stage(
                ExportStage.ORT_OPTIMIZE,
                lambda: optimize_for_cpu(self.onnx_path, self.spec),
                skip=None if self.options.optimize else "not requested",
                summary=lambda r: f"kept={r.kept} ({r.reason}), speedup={r.speedup:.3f}, fused_ops={r.fused_ops}",
            )
        )
        return self.report.ort.optimized_path if self.report.ort is not None and self.report.ort.kept else None

    def _explain_skip(self) -> str | None:
        if not self.options.explain:
            return "not requested (--no-explain)"
        if not callable(getattr(self.model, "forward_with_attention", None)):
            why = getattr(self.model, "no_explain_reason", "")  # a wrapper may say why it cannot explain
            return f"{type(self.model).__name__} has no forward_with_attention(pixels) -> (logits, map){why}"
        return None

    def _export_explain(self) -> _ExplainExport:
        explain_model = ExplainModel(self.model).eval()
        with torch.inference_mode():
            *_, attention_map = explain_model(example_pixels(self.spec, 2))
        path = self.work_dir / "explain.onnx"
        output_names = (*self.spec.output_names, ATTENTION_OUTPUT_NAME)
        onnx_report = export_onnx(explain_model, self.spec, path, output_names=output_names)
        parity = verify_onnx(path, explain_model, self.spec)
        return _ExplainExport(onnx_report, parity, tuple(int(d) for d in attention_map.shape[1:]))

    def explain(self) -> _ExplainExport | None:
        """The explain model, the only graph that materialises attention probabilities (None when not served)."""
        explained = self.runner.run(
            Stage(
                ExportStage.EXPLAIN,
                self._export_explain,
                skip=self._explain_skip(),
                failure=lambda e: _parity_failure(e.parity),
                summary=lambda e: f"attention_dims={list(e.attention_dims)}, exporter={e.onnx.exporter}",
            )
        )
        if explained is not None:
            self.report.explain_onnx, self.report.explain_parity = explained.onnx, explained.parity
            self.report.explain_attention_dims = list(explained.attention_dims)
        return explained if self.runner.last.ok else None

    def _fp16_skip(self) -> str | None:
        fp16, tensorrt = self.options.fp16, self.options.tensorrt
        if not (fp16 if fp16 is not None else (tensorrt or "fp16" in self.spec.export.precisions)):
            return "not requested (neither --tensorrt nor 'fp16' in spec.export.precisions)"
        return modelopt_available()

    def fp16(self) -> Path:
        """fp16 ONNX (the TensorRT input), verified against fp32 in ORT; returns the graph TensorRT builds."""
        self.report.fp16 = self.runner.run(
            Stage(
                ExportStage.FP16,
                lambda: export_fp16(self.onnx_path, self.spec),
                skip=self._fp16_skip(),
                failure=lambda r: _parity_failure(r.parity),
                summary=lambda r: f"max_abs_diff={r.max_abs_diff:.3g}, top1_agreement={r.top1_agreement:.3f}",
            )
        )
        return self.report.fp16.fp16_path if self.report.fp16 is not None and self.runner.last.ok else self.onnx_path

    def tensorrt(self, source: Path) -> None:
        """TensorRT engine on GPU hosts; its own stage says skipped and why elsewhere."""
        if not self.options.tensorrt:
            self.runner.skip(ExportStage.ONNX2TRT, "not requested (--tensorrt)")
            return
        self.report.tensorrt = build_engine(
            source, self.spec, self.work_dir / "model.plan", reference_onnx=self.onnx_path
        )
        self.runner.record(self.report.tensorrt.stage)

    def _write(self, cpu_graph: Path | None, explained: _ExplainExport | None) -> dict[str, Path]:
        spec, repository, version = self.spec, self.repository, self.options.version
        entries = {
            spec.name: write_model_entry(spec, self.onnx_path, repository, version=version, cpu_onnx_path=cpu_graph)
        }
        if explained is not None:
            entries[spec.explain_name] = write_explain_entry(
                spec, explained.path, repository, explained.attention_dims, version=version
            )
        trt = self.report.tensorrt
        if trt is not None and trt.plan_path is not None:
            entries[spec.trt_name] = write_trt_entry(spec, trt.plan_path, repository, version=version)
        return entries

    def write_entries(self, cpu_graph: Path | None, explained: _ExplainExport | None) -> None:
        """Repository entries: only verified artefacts get here."""
        cpu_file = (cpu_graph or self.onnx_path).name
        entries = self.runner.run(
            Stage(
                ExportStage.REPOSITORY,
                lambda: self._write(cpu_graph, explained),
                summary=lambda e: f"entries={sorted(e)}, cpu_runner_graph={cpu_file}",
                required=True,
            )
        )
        self.report.entries = entries or {}


def export_module(
    model: nn.Module,
    spec: ModelSpec,
    repository: Path = REPOSITORY_DIR,
    *,
    work_dir: Path | None = None,
    options: ExportOptions | None = None,
    on_stage: StageCallback | None = None,
) -> ExportReport:
    """Run the export pipeline for any `nn.Module` that takes uint8 pixels and returns logits.

    Args:
        model: the module (a registry model, a Hugging Face wrapper, a user's timm/torchvision model wrapped
            to normalise inside).
        spec: its ModelSpec (input shape, labels, batching, tolerances).
        repository: the Triton model repository to write entries into.
        work_dir: artefacts and reports (default `runs/NAME/export`).
        options: the optional stages (default: `ExportOptions()`).
        on_stage: called with each finished stage.

    Returns:
        The `ExportReport` (also written to `work_dir/export_report.json`).

    Raises:
        ExportError: the ONNX export failed (both exporters).
        ParityError: the exported graph does not match the model; nothing is written to the repository.
    """
    return _export(model, spec, Path(repository), work_dir, options or ExportOptions(), on_stage)


def _export(
    model: nn.Module,
    spec: ModelSpec,
    repository: Path,
    work_dir: Path | None,
    options: ExportOptions,
    on_stage: StageCallback | None,
) -> ExportReport:
    if options.opset is not None and options.opset != spec.export.opset:  # an explicit choice wins, and says so
        spec = spec.with_export(opset=options.opset)
    work_dir = Path(work_dir or RUNS_DIR / spec.name / "export")
    work_dir.mkdir(parents=True, exist_ok=True)
    run = _ExportRun(model, spec, repository, work_dir, options)
    run.runner.on_stage = on_stage
    return run.run()


def export_model(
    name_or_run: str | Path,
    repository: Path = REPOSITORY_DIR,
    *,
    runs_dir: Path = RUNS_DIR,
    options: ExportOptions | None = None,
    on_stage: StageCallback | None = None,
    untrained: bool = False,
    **arch_overrides: Any,
) -> ExportReport:
    """Export a deployable (registry name, using `runs/NAME/` when trained) or a run folder.

    Args:
        name_or_run: a deployable name or a run folder holding `spec.json` + `model.safetensors`.
        repository: the Triton model repository.
        runs_dir: parent of run folders; artefacts go to `runs_dir/NAME/export/`.
        options: the optional stages (default: `ExportOptions()`).
        on_stage: called with each finished stage.
        untrained: allow random weights for a trainable deployable without a checkpoint (the entry's spec
            says `trained: false`); without it such an export raises `MissingCheckpointError`.
        **arch_overrides: architecture overrides for an untrained deployable (e.g. `depth=1` in tests).

    Returns:
        The `ExportReport`.

    Raises:
        MissingCheckpointError: a trainable deployable has no checkpoint in `runs_dir` and not `untrained`.
    """
    from attnserve.catalogue import default_spec
    from attnserve.models.checkpoint import build_model, resolve

    if arch_overrides:
        spec = default_spec(str(name_or_run), **arch_overrides)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build_model(spec)
    else:
        model, spec = resolve(name_or_run, runs_dir, allow_untrained=untrained)
    work_dir = Path(runs_dir) / spec.name / "export"
    return _export(model, spec, Path(repository), work_dir, options or ExportOptions(), on_stage)


def export_hf(
    path: Path,
    repository: Path = REPOSITORY_DIR,
    *,
    name: str | None = None,
    runs_dir: Path = RUNS_DIR,
    options: ExportOptions | None = None,
    on_stage: StageCallback | None = None,
) -> ExportReport:
    """Export a local Hugging Face image classifier (`save_pretrained` folder or `config.json`), offline.

    ViT-like models also get `NAME_explain` (attention rollout); others skip it with the reason.

    Args:
        path: the `save_pretrained` folder or its `config.json`.
        repository: the Triton model repository.
        name: the entry name (default: from the folder).
        runs_dir: parent of run folders; artefacts go to `runs_dir/NAME/export/`.
        options: the optional stages (default: `ExportOptions()`).
        on_stage: called with each finished stage.
    """
    from attnserve.export.hf_detection import load_hf_detector, loads_a_detector
    from attnserve.export.hf_import import _config_folder, _spec_name, load_hf_classifier

    if loads_a_detector(path):  # DETR, YOLOS: detection candidates, served through NAME_postprocess
        model, spec = load_hf_detector(path, name=name or _spec_name(_config_folder(path)))
    else:
        model, spec = load_hf_classifier(path, name=name)
    options = options or ExportOptions()
    return _export(model, spec, Path(repository), Path(runs_dir) / spec.name / "export", options, on_stage)
