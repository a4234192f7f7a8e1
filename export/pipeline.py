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
from pathlib import Path
from typing import Any

import torch
from pydantic import computed_field
from torch import nn

from attnserve.errors import ExportError
from attnserve.export.fp16 import Fp16Report, export_fp16, modelopt_available
from attnserve.export.onnx2trt import TensorRTBuildReport, build_engine
from attnserve.export.ort_optimize import OrtOptimizationReport, optimize_for_cpu
from attnserve.export.reports import OnnxExportReport, ParityReport, StageRecorder, StageResult, _Report, short_error
from attnserve.export.torch2onnx import example_pixels, export_onnx
from attnserve.export.verify import verify_onnx
from attnserve.repository.entries import write_explain_entry, write_model_entry, write_trt_entry
from attnserve.spec import ATTENTION_OUTPUT_NAME, OUTPUT_NAME, ModelSpec

logger = logging.getLogger(__name__)

REPORT_FILENAME = "export_report.json"

StageCallback = Callable[[StageResult], None]
"""Called after each stage (the CLI prints a line per stage)."""


class ExportReport(_Report):
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

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in self.stages if s.stage == name), None)


class ExplainModel(nn.Module):
    """Exports `forward_with_attention`: uint8 pixels -> (logits, attention_map)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_attention(pixels)


class _Run:
    """One pipeline run: a stage recorder that also reports each finished stage to a callback."""

    def __init__(self, on_stage: StageCallback | None) -> None:
        self.recorder = StageRecorder()
        self.on_stage = on_stage

    def emit(self) -> None:
        if self.on_stage is not None:
            self.on_stage(self.recorder.results[-1])

    def ok(self, name: str, started: float, **details: Any) -> None:
        self.recorder.results.append(
            StageResult(stage=name, status="ok", seconds=time.perf_counter() - started, details=details)
        )
        self.emit()

    def failed(self, name: str, started: float, reason: str, **details: Any) -> None:
        self.recorder.failed(name, reason, time.perf_counter() - started, **details)
        self.emit()

    def skipped(self, name: str, reason: str) -> None:
        self.recorder.skipped(name, reason)
        self.emit()


def export_module(
    model: nn.Module,
    spec: ModelSpec,
    repository: Path = Path("model_repository"),
    *,
    work_dir: Path | None = None,
    opset: int | None = None,
    explain: bool = True,
    optimize: bool = True,
    fp16: bool | None = None,
    tensorrt: bool = False,
    version: int | None = None,
    on_stage: StageCallback | None = None,
) -> ExportReport:
    """Run the export pipeline for any `nn.Module` that takes uint8 pixels and returns logits.

    Args:
        model: the module (a registry model, a Hugging Face wrapper, a user's timm/torchvision model wrapped
            to normalise inside).
        spec: its ModelSpec (input shape, labels, batching, tolerances).
        repository: the Triton model repository to write entries into.
        work_dir: artefacts and reports (default `runs/NAME/export`).
        opset: ONNX opset; None (default) = `spec.opset`. An explicit one is written into the exported spec.
        explain: also export `NAME_explain` when the model has `forward_with_attention`.
        optimize: run ORT's offline optimisation (kept only with parity and a measured gain).
        fp16: produce and verify the fp16 ONNX (default: when `--tensorrt` or "fp16" in `spec.precisions`).
        tensorrt: build a TensorRT engine (skipped with the reason without TensorRT and a GPU).
        version: repository version folder (default: the next free one).
        on_stage: called with each finished stage.

    Returns:
        The `ExportReport` (also written to `work_dir/export_report.json`).

    Raises:
        ExportError: the ONNX export failed (both exporters).
        ParityError: the exported graph does not match the model; nothing is written to the repository.
    """
    started_all = time.perf_counter()
    if opset is not None and opset != spec.opset:  # an explicit choice overrides the spec, and says so in it
        spec = spec.model_copy(update={"opset": opset})
    model = model.eval()
    work_dir = Path(work_dir or Path("runs") / spec.name / "export")
    work_dir.mkdir(parents=True, exist_ok=True)
    repository = Path(repository)
    run = _Run(on_stage)
    report = ExportReport(name=spec.name, spec=spec, work_dir=work_dir, repository=repository, stages=[])

    def finish() -> ExportReport:
        report.stages = run.recorder.results
        report.seconds = time.perf_counter() - started_all
        report.write_json(work_dir / REPORT_FILENAME)
        return report

    # 1. torch -> ONNX (dynamo, TorchScript fallback): both attempts land in the report
    started = time.perf_counter()
    onnx_path = work_dir / "model.onnx"
    try:
        report.onnx = export_onnx(model, spec, onnx_path)
    except ExportError as exc:
        run.failed("onnx", started, str(exc))
        finish()
        raise
    run.ok(
        "onnx",
        started,
        exporter=report.onnx.exporter,
        opset=report.onnx.opset,
        attention_nodes=report.onnx.attention_nodes,
        attempts=[f"{s.stage}: {s.status}" + (f" ({s.reason})" if s.reason else "") for s in report.onnx.stages],
    )

    # 2. verification: checker, symbolic batch, parity at 1, 2, max
    started = time.perf_counter()
    report.parity = verify_onnx(onnx_path, model, spec)
    if not report.parity.ok:
        run.failed("verify", started, "; ".join(report.parity.failures))
        finish()
        report.parity.raise_on_failure()
    run.ok("verify", started, batch_sizes=report.parity.batch_sizes, max_abs_diff=report.parity.max_abs_diff())

    # 3. ORT offline optimisation (kept only if parity holds and it is measurably faster)
    cpu_graph: Path | None = None  # the ORT-optimised graph, when kept, for the embedded CPU runner
    if optimize:
        started = time.perf_counter()
        try:
            report.ort = optimize_for_cpu(onnx_path, spec)
        except Exception as exc:  # noqa: BLE001 - optional stage: record and serve the verified graph
            run.failed("ort_optimize", started, short_error(exc))
        else:
            if report.ort.kept:
                cpu_graph = report.ort.optimized_path
            run.ok(
                "ort_optimize",
                started,
                kept=report.ort.kept,
                reason=report.ort.reason,
                speedup=round(report.ort.speedup, 3),
                fused_ops=report.ort.fused_ops,
            )
    else:
        run.skipped("ort_optimize", "not requested")

    # 4. explain model: the only graph that materialises attention probabilities
    explain_path: Path | None = None
    attention_dims: tuple[int, ...] = ()
    if not explain:
        run.skipped("explain", "not requested (--no-explain)")
    elif not callable(getattr(model, "forward_with_attention", None)):
        why = getattr(model, "no_explain_reason", "")  # a wrapper may say why it cannot explain
        run.skipped("explain", f"{type(model).__name__} has no forward_with_attention(pixels) -> (logits, map){why}")
    else:
        started = time.perf_counter()
        explain_model = ExplainModel(model).eval()
        try:
            with torch.inference_mode():
                _, attention_map = explain_model(example_pixels(spec, 2))
            attention_dims = tuple(int(d) for d in attention_map.shape[1:])
            explain_path = work_dir / "explain.onnx"
            report.explain_onnx = export_onnx(
                explain_model, spec, explain_path, output_names=(OUTPUT_NAME, ATTENTION_OUTPUT_NAME)
            )
            report.explain_parity = verify_onnx(explain_path, explain_model, spec)
        except Exception as exc:  # noqa: BLE001 - the main model is still served; the report says why
            explain_path = None
            run.failed("explain", started, short_error(exc))
        else:
            if report.explain_parity.ok:
                run.ok("explain", started, attention_dims=list(attention_dims), exporter=report.explain_onnx.exporter)
            else:
                explain_path = None
                run.failed("explain", started, "; ".join(report.explain_parity.failures))

    # 5. fp16 ONNX (the TensorRT input), verified against fp32 in ORT
    want_fp16 = fp16 if fp16 is not None else (tensorrt or "fp16" in spec.precisions)
    trt_source = onnx_path
    if not want_fp16:
        run.skipped("fp16", "not requested (neither --tensorrt nor 'fp16' in spec.precisions)")
    elif (missing := modelopt_available()) is not None:
        run.skipped("fp16", missing)
    else:
        started = time.perf_counter()
        try:
            report.fp16 = export_fp16(onnx_path, spec)
        except Exception as exc:  # noqa: BLE001
            run.failed("fp16", started, short_error(exc))
        else:
            details = dict(max_abs_diff=report.fp16.max_abs_diff, top1_agreement=report.fp16.top1_agreement)
            if report.fp16.ok:
                trt_source = report.fp16.fp16_path
                run.ok("fp16", started, **details)
            else:
                run.failed("fp16", started, "; ".join(report.fp16.parity.failures), **details)

    # 6. TensorRT engine (GPU hosts); skipped with the reason elsewhere
    if tensorrt:
        report.tensorrt = build_engine(trt_source, spec, work_dir / "model.plan", reference_onnx=onnx_path)
        run.recorder.results.append(report.tensorrt.stage)
        run.emit()
    else:
        run.skipped("onnx2trt", "not requested (--tensorrt)")

    # 7. repository entries (only verified artefacts get here)
    started = time.perf_counter()
    report.entries[spec.name] = write_model_entry(spec, onnx_path, repository, version=version, cpu_onnx_path=cpu_graph)
    if explain_path is not None:
        report.entries[spec.explain_name] = write_explain_entry(
            spec, explain_path, repository, attention_dims, version=version
        )
    if report.tensorrt is not None and report.tensorrt.plan_path is not None:
        report.entries[spec.trt_name] = write_trt_entry(spec, report.tensorrt.plan_path, repository, version=version)
    cpu_file = cpu_graph.name if cpu_graph is not None else onnx_path.name
    run.ok("repository", started, entries=sorted(report.entries), cpu_runner_graph=cpu_file)
    return finish()


def export_model(
    name_or_run: str | Path,
    repository: Path = Path("model_repository"),
    *,
    runs_dir: Path = Path("runs"),
    opset: int | None = None,
    tensorrt: bool = False,
    explain: bool = True,
    optimize: bool = True,
    fp16: bool | None = None,
    version: int | None = None,
    on_stage: StageCallback | None = None,
    untrained: bool = False,
    **arch_overrides: Any,
) -> ExportReport:
    """Export a deployable (registry name, using `runs/NAME/` when trained) or a run folder.

    Args:
        name_or_run: a deployable name or a run folder holding `spec.json` + `model.safetensors`.
        repository: the Triton model repository.
        runs_dir: parent of run folders; artefacts go to `runs_dir/NAME/export/`.
        opset: 23 (fused ONNX `Attention`) or 18 (MatMul/Softmax, older runtimes); None = the spec's.
        tensorrt: build a TensorRT engine (skipped with the reason without TensorRT/GPU).
        explain: export `NAME_explain` too.
        optimize: ORT offline optimisation stage.
        fp16: fp16 ONNX stage (default: with `tensorrt` or when the spec lists fp16).
        version: repository version folder (default: next free).
        on_stage: called with each finished stage.
        untrained: allow random weights for a trainable deployable without a checkpoint (the entry's spec
            says `trained: false`); without it such an export raises `MissingCheckpointError`.
        **arch_overrides: architecture overrides for an untrained deployable (e.g. `depth=1` in tests).

    Returns:
        The `ExportReport`.

    Raises:
        MissingCheckpointError: a trainable deployable has no checkpoint in `runs_dir` and not `untrained`.
    """
    from attnserve.models.checkpoint import build_model, resolve
    from attnserve.models.deployables import default_spec

    if arch_overrides:
        spec = default_spec(str(name_or_run), **arch_overrides)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build_model(spec)
    else:
        model, spec = resolve(name_or_run, runs_dir, allow_untrained=untrained)
    stage_options = dict(
        opset=opset,
        explain=explain,
        optimize=optimize,
        fp16=fp16,
        tensorrt=tensorrt,
        version=version,
        on_stage=on_stage,
    )
    return export_module(model, spec, repository, work_dir=Path(runs_dir) / spec.name / "export", **stage_options)


def export_hf(
    path: Path,
    repository: Path = Path("model_repository"),
    *,
    name: str | None = None,
    runs_dir: Path = Path("runs"),
    opset: int | None = None,
    tensorrt: bool = False,
    explain: bool = True,
    optimize: bool = True,
    fp16: bool | None = None,
    version: int | None = None,
    on_stage: StageCallback | None = None,
) -> ExportReport:
    """Export a local Hugging Face image classifier (`save_pretrained` folder or `config.json`), offline.

    ViT-like models also get `NAME_explain` (attention rollout); others skip it with the reason.
    """
    from attnserve.export.hf_import import load_hf_classifier

    model, spec = load_hf_classifier(path, name=name)
    stage_options = dict(
        opset=opset,
        explain=explain,
        optimize=optimize,
        fp16=fp16,
        tensorrt=tensorrt,
        version=version,
        on_stage=on_stage,
    )
    return export_module(model, spec, repository, work_dir=Path(runs_dir) / spec.name / "export", **stage_options)
