"""The CPU-variant choice (`attnserve cpu-variants`): build every CPU variant of a model, measure it, pick the
fastest behind an accuracy gate.

For each variant of `cpu_variants.CPU_VARIANTS` (runtime x precision) the table records:
- parity against the fp32 ONNX Runtime baseline on the evaluation inputs: max abs diff of the logits,
  top-1 agreement, cosine similarity of the logits (mean and worst sample);
- held-out accuracy when the model is trained (`spec.trained`) and labels are given;
- batch-1 latency and throughput at the largest preferred batch, in-process, through the very session
  class the CPU runner serves with (`attnserve.runtimes.session.open_session`).

The gate (`gate_verdict`): a trained model's variant may lose at most `spec.runtime.accuracy_budget_points`
top-1 points against fp32 on the held-out split; an untrained model's top-1 flips on near-ties, so its
variants must keep a mean cosine similarity of at least `spec.runtime.cosine_budget` to the fp32 logits. The pick is
the variant with the highest batch throughput among those within the gate (fp32 always is).

Timing on a shared machine: every candidate is measured in each of `repeats` rounds, candidates interleaved
(and their order rotated) within a round, and the table keeps the median round. Other processes load the
same cores, so only ratios measured in one run mean anything; the report says so and records the load.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from attnserve.defaults import RUNS_DIR
from attnserve.errors import ExportError, UserInputError
from attnserve.export.cpu_variants import (
    BASELINE_VARIANT,
    CPU_VARIANTS,
    FP32_FILENAME,
    GPU_VARIANTS,
    BuiltFile,
    CpuVariant,
    build_variant_files,
    check_pixels,
    unavailable_reason,
)
from attnserve.export.stages import ArtefactReport, Stage, StageRunner, StageStatus
from attnserve.runtimes.session import PRECISION_OPTION, Session, intra_op_threads_for, open_session
from attnserve.spec import INPUT_NAME, OUTPUT_NAME, ModelSpec

logger = logging.getLogger(__name__)

TABLE_FILENAME = "cpu_variants.json"
REPORT_FILENAME = "cpu_variants.md"
SHARED_MACHINE_NOTE = (
    "Measured in-process on a shared machine (other processes load the same cores): compare ratios within "
    "this table only; absolute figures move from run to run."
)
GateKind = Literal["accuracy", "cosine"]


class VariantRow(BaseModel):
    """One row of the table: a variant, how it did, and whether it was picked and why."""

    variant: str
    runtime: str
    precision: str
    quantization: str
    model_file: str
    status: StageStatus
    reason: str | None = None
    """Why a variant is `skipped` / `failed`."""
    build_seconds: float = 0.0
    """Time to write the variant's model file (quantisation); 0 for the fp32 file."""
    load_seconds: float = 0.0
    """Time to open the session (OpenVINO compiles here)."""
    execution_precision: str | None = None
    """What the runtime reports it compiled for (OpenVINO), when it says."""
    # parity against the fp32 baseline on the evaluation inputs
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    cosine_mean: float | None = None
    cosine_min: float | None = None
    # held-out accuracy (trained models)
    accuracy_percent: float | None = None
    accuracy_drop_points: float | None = None
    # speed (median round) and every round
    latency_b1_ms: float | None = None
    throughput_img_s: float | None = None
    latency_b1_ms_rounds: list[float] = Field(default_factory=list)
    throughput_img_s_rounds: list[float] = Field(default_factory=list)
    speedup_vs_fp32: float | None = None
    # the decision
    within_gate: bool | None = None
    picked: bool = False
    why: str = ""


class CpuChoiceReport(ArtefactReport):
    """The whole table, the gate, the pick and how it was measured (written beside the artefacts)."""

    model: str
    trained: bool
    gate: GateKind
    gate_rule: str
    """The rule in words, e.g. `accuracy >= fp32 - 0.5 points on 500 held-out samples`."""
    budget: float
    batch_size: int
    """Batch of the throughput column (the spec's largest preferred batch)."""
    intra_op_threads: int
    repeats: int
    eval_samples: int
    calibration_samples: int
    data_source: str
    fp32_accuracy_percent: float | None = None
    rows: list[VariantRow]
    picked: str
    picked_runtime: str
    picked_precision: str
    picked_model_file: str
    variants_dir: Path
    machine: dict[str, Any]
    note: str = SHARED_MACHINE_NOTE
    seconds: float

    def row(self, variant_name: str) -> VariantRow:
        """The row of `variant_name` (raises `UserInputError` listing the rows when absent)."""
        for row in self.rows:
            if row.variant == variant_name:
                return row
        raise UserInputError(f"no row {variant_name!r} in the table; rows: {[r.variant for r in self.rows]}")


# ---------------------------------------------------------------------------------------------------------
# parity, accuracy, gate
# ---------------------------------------------------------------------------------------------------------
def logits_parity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Max abs diff, top-1 agreement and cosine similarity (mean, worst sample) of `candidate` vs `reference`.

    Args:
        reference: fp32 baseline logits `(N, classes)`.
        candidate: the variant's logits, same shape.

    Raises:
        ShapeError-like UserInputError: the shapes differ.
    """
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise UserInputError(
            f"logits to compare must both be (N, classes); got {reference.shape} and {candidate.shape}"
        )
    reference64 = reference.astype(np.float64)
    candidate64 = candidate.astype(np.float64)
    norms = np.linalg.norm(reference64, axis=1) * np.linalg.norm(candidate64, axis=1)
    cosine = np.sum(reference64 * candidate64, axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)
    return {
        "max_abs_diff": float(np.max(np.abs(reference64 - candidate64))),
        "top1_agreement": float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1))),
        "cosine_mean": float(np.mean(cosine)),
        "cosine_min": float(np.min(cosine)),
    }


def gate_verdict(row: VariantRow, gate: GateKind, budget: float) -> tuple[bool, str]:
    """Whether a measured row is within the gate, and the reason in words.

    Args:
        row: a row with parity (and, for the accuracy gate, accuracy) filled in.
        gate: `accuracy` (trained models: drop in top-1 points) or `cosine` (untrained: mean cosine to fp32).
        budget: the most points a variant may lose (`accuracy`), or the least mean cosine (`cosine`).
    """
    if row.variant == BASELINE_VARIANT.name:
        return True, "the fp32 reference"
    if gate == "accuracy":
        if row.accuracy_drop_points is None:
            return False, "no held-out accuracy measured"
        drop = row.accuracy_drop_points
        ok = drop <= budget + 1e-9  # tolerance: float noise on percentages of equal counts
        if drop <= 0:
            return ok, f"no accuracy lost ({-drop + 0.0:+.2f} points)"  # + 0.0: no "-0.00"
        return ok, f"loses {drop:.2f} points {'<=' if ok else '>'} budget {budget:g}"
    if row.cosine_mean is None:
        return False, "no parity measured"
    ok = row.cosine_mean >= budget
    relation = ">=" if ok else "<"
    return ok, f"cosine {row.cosine_mean:.6f} {relation} budget {budget:g}"


def pick_fastest(rows: Sequence[VariantRow], gate: GateKind, budget: float) -> VariantRow:
    """Apply the gate to every `ok` row, mark the fastest within it as picked, write each row's `why`.

    Speed is the batch throughput; when throughput was not measured, the baseline is picked (nothing to
    justify leaving it). Rows are updated in place; returns the picked row.
    """
    baseline = next((row for row in rows if row.variant == BASELINE_VARIANT.name and row.status == "ok"), None)
    if baseline is None:
        raise UserInputError(f"the table needs an `ok` {BASELINE_VARIANT.name} row as the reference")
    candidates: list[VariantRow] = []
    for row in rows:
        row.picked = False
        if row.status != "ok":
            row.within_gate = None
            row.why = f"{row.status}: {row.reason}"
            continue
        row.within_gate, row.why = gate_verdict(row, gate, budget)
        if row.within_gate:
            candidates.append(row)
    measured = [row for row in candidates if row.throughput_img_s is not None]
    picked = max(measured, key=lambda row: row.throughput_img_s or 0.0) if measured else baseline
    picked.picked = True
    for row in candidates:
        if row is picked:
            row.why = f"picked: fastest within the gate ({row.why})"
        elif row.throughput_img_s is not None and picked.throughput_img_s is not None:
            row.why = f"within the gate ({row.why}) but slower than {picked.variant}"
    for row in rows:
        if row.status == "ok" and not row.within_gate:
            row.why = f"outside the gate: {row.why}"
    return picked


# ---------------------------------------------------------------------------------------------------------
# running and timing sessions
# ---------------------------------------------------------------------------------------------------------
def run_logits(session: Session, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of `pixels` through `session`, `batch_size` samples per call."""
    chunks = [
        session.run({INPUT_NAME: pixels[start : start + batch_size]})[OUTPUT_NAME]
        for start in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(chunks, axis=0).astype(np.float32, copy=False)


def time_calls(call: Callable[[], object], *, min_seconds: float, min_calls: int) -> list[float]:
    """Seconds of each call of `call`, repeated until both `min_calls` and `min_seconds` are reached."""
    durations: list[float] = []
    started = time.perf_counter()
    while len(durations) < min_calls or time.perf_counter() - started < min_seconds:
        call_started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - call_started)
    return durations


def machine_facts() -> dict[str, Any]:
    """CPU model, cores this process may use, the ISA features that decide int8/bf16 speed, load average."""
    cpu_model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu_model == "unknown":
                cpu_model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    features = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return {
        "cpu": cpu_model,
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "features": [feature for feature in features if feature in flags],
        "load_average_1min": _load_average(),
    }


def _load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _session_options(variant: CpuVariant) -> dict[str, str]:
    return {PRECISION_OPTION: variant.precision}


# ---------------------------------------------------------------------------------------------------------
# the whole table
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChoiceData:
    """The inputs a choice is measured on (`choice_data` draws them for a deployable)."""

    calibration_pixels: np.ndarray
    """uint8 inputs from the training split, for the static int8 (Q/DQ) variant."""
    eval_pixels: np.ndarray
    """uint8 held-out inputs for parity (and accuracy)."""
    eval_labels: np.ndarray | None = None
    """Held-out class indices; required for a trained model (the accuracy gate)."""
    source: str = "given by the caller"
    """Where the calibration and evaluation inputs come from, in words (for the report)."""


@dataclass(frozen=True)
class ChoiceSettings:
    """How a choice is gated and timed (the CLI's flags)."""

    budget_points: float | None = None
    """Accuracy budget override (default `spec.runtime.accuracy_budget_points`)."""
    cosine_budget: float | None = None
    """Cosine budget override for untrained models (default `spec.runtime.cosine_budget`)."""
    variants: Sequence[CpuVariant] = CPU_VARIANTS
    """The candidates; must include the fp32 ONNX Runtime baseline."""
    repeats: int = 3
    """Timing rounds (the median round is kept)."""
    min_seconds: float = 1.0
    """The least time one throughput measurement of one candidate takes per round."""
    measure_speed: bool = True
    """False skips timing (the pick is then the baseline); parity and gate still run."""


def choose_cpu_variant(
    spec: ModelSpec,
    fp32_onnx: Path,
    variants_dir: Path,
    data: ChoiceData,
    settings: ChoiceSettings | None = None,
) -> CpuChoiceReport:
    """Build, check and time every variant of a verified fp32 ONNX model; pick the fastest within the gate.

    Args:
        spec: the model's spec (batch sizes, instance count, budgets, `trained`).
        fp32_onnx: the verified fp32 ONNX model (input `pixels` uint8, output `logits`).
        variants_dir: where the variant files and the table go (`cpu_variants.json` / `.md`).
        data: calibration and evaluation inputs (and labels for a trained model).
        settings: budgets, candidates and timing (default: `ChoiceSettings()`).

    Returns:
        The report; also written to `variants_dir/cpu_variants.json` and `cpu_variants.md`.

    Raises:
        UserInputError: bad inputs (shape, dtype, missing labels for a trained model, no baseline).
    """
    started = time.perf_counter()
    settings = settings or ChoiceSettings()
    variants, repeats, measure_speed = settings.variants, settings.repeats, settings.measure_speed
    if BASELINE_VARIANT not in variants or repeats < 1:
        raise UserInputError(f"variants must include the baseline {BASELINE_VARIANT.name} and repeats be >= 1")
    eval_pixels, eval_labels = check_pixels(data.eval_pixels, spec, "evaluation pixels"), data.eval_labels
    calibration_pixels = check_pixels(data.calibration_pixels, spec, "calibration pixels")
    gate = _gate_for(spec, eval_labels, len(eval_pixels), settings.budget_points, settings.cosine_budget)
    threads, batch_size = intra_op_threads_for(spec.serving.instance_count), spec.serving.opt_batch_size
    machine = machine_facts()
    variants_dir = Path(variants_dir)
    built_files = build_variant_files(fp32_onnx, variants_dir, calibration_pixels, variants)
    runner = StageRunner()
    rows, sessions = _open_sessions(variants, built_files, threads, runner)
    by_name = {row.variant: row for row in rows}
    if BASELINE_VARIANT.name not in sessions:
        raise UserInputError(f"the fp32 baseline did not load: {by_name[BASELINE_VARIANT.name].reason}")
    fp32_accuracy = _measure_parity(by_name, sessions, eval_pixels, eval_labels, batch_size, runner)
    if measure_speed:
        _measure_speed(by_name, sessions, eval_pixels, batch_size, repeats=repeats, min_seconds=settings.min_seconds)
    picked = pick_fastest(rows, gate.kind, gate.budget)
    machine["load_average_1min_after"] = _load_average()
    report = CpuChoiceReport(
        model=spec.name,
        trained=spec.trained,
        gate=gate.kind,
        gate_rule=gate.rule,
        budget=gate.budget,
        batch_size=batch_size,
        intra_op_threads=threads,
        repeats=repeats if measure_speed else 0,
        eval_samples=len(eval_pixels),
        calibration_samples=len(calibration_pixels),
        data_source=data.source,
        fp32_accuracy_percent=fp32_accuracy,
        rows=rows,
        picked=picked.variant,
        picked_runtime=picked.runtime,
        picked_precision=picked.precision,
        picked_model_file=picked.model_file,
        variants_dir=variants_dir,
        machine=machine,
        seconds=round(time.perf_counter() - started, 1),
    )
    write_choice_report(report, variants_dir)
    return report


@dataclass(frozen=True)
class Gate:
    """The accuracy gate of one run: its kind, budget and the rule in words."""

    kind: GateKind
    budget: float
    rule: str


def _gate_for(
    spec: ModelSpec,
    eval_labels: np.ndarray | None,
    eval_samples: int,
    budget_points: float | None,
    cosine_budget: float | None,
) -> Gate:
    """Trained models: top-1 points against fp32 on held-out labels; untrained: cosine similarity of logits."""
    if spec.kind == "detection":  # its gate compares logits; a detector's candidates need an mAP gate (not built)
        raise UserInputError(f"{spec.name!r} is a detector: the CPU variant choice gates on logits; it serves fp32")
    if not spec.trained:
        budget = spec.runtime.cosine_budget if cosine_budget is None else cosine_budget
        rule = f"untrained model: mean cosine similarity of logits to fp32 >= {budget:g} on {eval_samples} samples"
        return Gate("cosine", budget, rule)
    if eval_labels is None or len(eval_labels) != eval_samples:
        got = "none" if eval_labels is None else len(eval_labels)
        raise UserInputError(
            f"a trained model's gate needs one held-out label per evaluation sample: {eval_samples} expected, got {got}"
        )
    budget = spec.runtime.accuracy_budget_points if budget_points is None else budget_points
    return Gate(
        "accuracy", budget, f"top-1 accuracy at most {budget:g} points below fp32 on {eval_samples} held-out samples"
    )


def _row(variant: CpuVariant, status: StageStatus = "ok", reason: str | None = None) -> VariantRow:
    return VariantRow(
        variant=variant.name,
        runtime=variant.runtime,
        precision=variant.precision,
        quantization=variant.quantization,
        model_file=variant.model_file,
        status=status,
        reason=reason,
    )


def _open_sessions(
    variants: Sequence[CpuVariant], built_files: dict[str, BuiltFile], threads: int, runner: StageRunner
) -> tuple[list[VariantRow], dict[str, Session]]:
    """One row per variant (GPU rows skipped with the reason) and a session for each variant that loads."""
    rows: list[VariantRow] = []
    sessions: dict[str, Session] = {}
    for variant in variants:
        built = built_files.get(variant.model_file)
        row = _row(variant)
        rows.append(row)
        if (reason := unavailable_reason(variant)) is not None:
            row.status, row.reason = "skipped", reason
            continue
        if built is None or built.path is None:
            row.status, row.reason = "failed", built.error if built else "model file was not built"
            continue
        path = built.path
        session = runner.run(
            Stage(
                f"load {variant.name}",
                partial(
                    open_session, variant.runtime, path, intra_op_threads=threads, options=_session_options(variant)
                ),
            )
        )
        row.build_seconds = built.seconds
        if session is None:  # a runtime that cannot load a variant is a table row
            row.status, row.reason = "failed", f"loading in {variant.runtime}: {runner.last.reason}"
            continue
        row.load_seconds = round(runner.last.seconds, 3)
        row.execution_precision = getattr(session, "execution_precision", None)
        sessions[variant.name] = session
    rows += [_row(variant, "skipped", unavailable_reason(variant)) for variant in GPU_VARIANTS]
    return rows, sessions


def _measure_parity(
    by_name: dict[str, VariantRow],
    sessions: dict[str, Session],
    eval_pixels: np.ndarray,
    eval_labels: np.ndarray | None,
    batch_size: int,
    runner: StageRunner,
) -> float | None:
    """Parity (and accuracy) of every loaded variant against the fp32 baseline; returns fp32's accuracy.

    A variant that fails to run is a failed row and leaves `sessions`.
    """
    reference_logits = run_logits(sessions[BASELINE_VARIANT.name], eval_pixels, batch_size)
    labels = None if eval_labels is None or len(eval_labels) != len(eval_pixels) else np.asarray(eval_labels)
    fp32_accuracy = None if labels is None else 100.0 * float(np.mean(reference_logits.argmax(axis=1) == labels))
    for name, session in list(sessions.items()):
        row = by_name[name]
        logits = runner.run(Stage(f"run {name}", partial(run_logits, session, eval_pixels, batch_size)))
        if logits is None:
            row.status, row.reason = "failed", f"running in {row.runtime}: {runner.last.reason}"
            del sessions[name]
            continue
        for key, value in logits_parity(reference_logits, logits).items():
            setattr(row, key, value)
        if fp32_accuracy is not None:
            row.accuracy_percent = 100.0 * float(np.mean(logits.argmax(axis=1) == labels))
            row.accuracy_drop_points = fp32_accuracy - row.accuracy_percent
    return fp32_accuracy


def _measure_speed(
    by_name: dict[str, VariantRow],
    sessions: dict[str, Session],
    eval_pixels: np.ndarray,
    batch_size: int,
    *,
    repeats: int,
    min_seconds: float,
) -> None:
    """Batch-1 latency and batch throughput per session: interleaved rounds, order rotated, median kept."""
    one_image = np.ascontiguousarray(eval_pixels[:1])
    batch_pixels = np.ascontiguousarray(np.resize(eval_pixels, (batch_size, *eval_pixels.shape[1:])))
    names = list(sessions)
    for session in sessions.values():  # warm-up: first calls compile / allocate
        session.run({INPUT_NAME: batch_pixels})
        session.run({INPUT_NAME: one_image})
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            session, row = sessions[name], by_name[name]
            latencies = time_calls(
                partial(session.run, {INPUT_NAME: one_image}), min_seconds=min_seconds / 4, min_calls=5
            )
            batch_times = time_calls(
                partial(session.run, {INPUT_NAME: batch_pixels}), min_seconds=min_seconds, min_calls=2
            )
            row.latency_b1_ms_rounds.append(round(1000.0 * statistics.median(latencies), 3))
            row.throughput_img_s_rounds.append(round(batch_size * len(batch_times) / sum(batch_times), 2))
    for name in names:
        row = by_name[name]
        row.latency_b1_ms = statistics.median(row.latency_b1_ms_rounds)
        row.throughput_img_s = statistics.median(row.throughput_img_s_rounds)
    baseline = by_name[BASELINE_VARIANT.name].throughput_img_s
    for name in names:
        row = by_name[name]
        if baseline and row.throughput_img_s:
            row.speedup_vs_fp32 = round(row.throughput_img_s / baseline, 3)


# ---------------------------------------------------------------------------------------------------------
# the table as text
# ---------------------------------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_markdown(report: CpuChoiceReport) -> str:
    """The table as Markdown: one row per variant, the gate, the pick and the machine it was measured on."""
    lines = [
        f"### CPU variants of `{report.model}` ({'trained' if report.trained else 'untrained'})",
        "",
        f"Gate: {report.gate_rule}. Pick: **{report.picked}** (runtime `{report.picked_runtime}`, "
        f"precision `{report.picked_precision}`, file `{report.picked_model_file}`).",
        "",
        f"| variant | status | max abs diff | top-1 agree | cosine (mean / min) | accuracy % | b1 latency ms "
        f"| b{report.batch_size} img/s | x fp32 | picked | why |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in report.rows:
        cosine = "-" if row.cosine_mean is None else f"{row.cosine_mean:.5f} / {row.cosine_min:.5f}"
        accuracy = _fmt(row.accuracy_percent, ".2f")
        if row.accuracy_drop_points is not None and row.variant != BASELINE_VARIANT.name:
            accuracy += f" ({-row.accuracy_drop_points + 0.0:+.2f})"  # + 0.0: no "-0.00"
        lines.append(
            f"| {row.variant} | {row.status} | {_fmt(row.max_abs_diff, '.3g')} | {_fmt(row.top1_agreement, '.1%')} "
            f"| {cosine} | {accuracy} | {_fmt(row.latency_b1_ms, '.2f')} | {_fmt(row.throughput_img_s, '.1f')} "
            f"| {_fmt(row.speedup_vs_fp32, '.2f')} | {'yes' if row.picked else ''} | {row.why.replace('|', '/')} |"
        )
    machine = report.machine
    lines += [
        "",
        f"{report.eval_samples} evaluation samples, {report.calibration_samples} calibration samples "
        f"({report.data_source}); {report.intra_op_threads} threads, median of {report.repeats} interleaved rounds. "
        f"CPU: {machine.get('cpu')} ({machine.get('cores_available')} cores, {', '.join(machine.get('features', []))}); "
        f"load average {machine.get('load_average_1min')} before, {machine.get('load_average_1min_after')} after.",
        report.note,
        "",
    ]
    return "\n".join(lines)


def write_choice_report(report: CpuChoiceReport, out_dir: Path) -> tuple[Path, Path]:
    """Write `cpu_variants.json` and `cpu_variants.md` into `out_dir`; returns both paths."""
    out_dir = Path(out_dir)
    json_path = report.write_json(out_dir / TABLE_FILENAME)
    markdown_path = out_dir / REPORT_FILENAME
    markdown_path.write_text(render_markdown(report))
    return json_path, markdown_path


# ---------------------------------------------------------------------------------------------------------
# serving the pick
# ---------------------------------------------------------------------------------------------------------
def picked_spec(spec: ModelSpec, report: CpuChoiceReport) -> ModelSpec:
    """`spec` with its runtime section's `cpu_runtime` / `cpu_precision` set to the report's pick."""
    if report.model != spec.name:
        raise UserInputError(f"the table is for {report.model!r}, the spec for {spec.name!r}")
    return spec.with_runtime(cpu_runtime=report.picked_runtime, cpu_precision=report.picked_precision)


def serve_pick(spec: ModelSpec, report: CpuChoiceReport, repository: Path, *, version: int | None = None) -> Path:
    """Make `repository/NAME` serve the picked variant on the CPU runner; returns the entry folder.

    The new version folder holds the fp32 `model.onnx` (what NVIDIA's container serves on a GPU host) and
    the picked file; the config's parameters `runtime`, `precision` and `model_file` tell the embedded
    server's CPU runner which runtime opens which file in which precision. `spec.json` records the pick
    (`cpu_runtime`, `cpu_precision`) and the table is copied beside the config for audit.
    """
    from attnserve.repository.entries import add_model, model_config_for
    from attnserve.repository.runner import RunnerParameters

    served_spec = picked_spec(spec, report)
    variants_dir = Path(report.variants_dir)
    picked_path = variants_dir / report.picked_model_file
    if not picked_path.is_file():
        raise UserInputError(f"the picked model file is missing: expected {picked_path}")
    runner = RunnerParameters.for_spec(served_spec, report.picked_model_file)  # runtime/precision: the pick
    config = model_config_for(served_spec, extra_parameters=runner.to_parameters())
    extra_files = {report.picked_model_file: picked_path} if report.picked_model_file != FP32_FILENAME else None
    fp32_target = add_model(
        repository, config, variants_dir / FP32_FILENAME, spec=served_spec, version=version, extra_files=extra_files
    )
    entry_dir = fp32_target.parent.parent
    write_choice_report(report, entry_dir)
    logger.info(
        "%s now serves %s (%s, %s) from %s",
        spec.name,
        report.picked,
        report.picked_runtime,
        report.picked_precision,
        fp32_target.parent,
    )
    return entry_dir


# ---------------------------------------------------------------------------------------------------------
# one deployable, end to end (what `attnserve cpu-variants NAME` and the bench run)
# ---------------------------------------------------------------------------------------------------------
def choice_data(
    spec: ModelSpec, *, eval_samples: int | None = None, calibration_samples: int = 128, seed: int = 0
) -> ChoiceData:
    """Calibration pixels, evaluation pixels and (trained models) held-out labels for a deployable.

    A trained model calibrates on a random subset of its training split and is evaluated on its held-out
    split (all of it unless `eval_samples` caps it), never the other way round. An untrained model has no
    training split: calibration and evaluation are disjoint draws of its sample generator (seeds
    `seed + 1` and `seed`), and there are no labels (the gate is then cosine similarity).

    Returns:
        The pixels (uint8, `(N, *spec.io.input_shape)`), the labels (None when untrained) and where they came from.
    """
    from attnserve.models.data import load_dataset, sample_inputs

    if calibration_samples < 1:
        raise UserInputError(f"calibration_samples must be >= 1, got {calibration_samples}")
    if eval_samples is not None and eval_samples < 1:
        raise UserInputError(f"eval_samples must be >= 1, got {eval_samples}")
    if spec.trained:
        splits = load_dataset(spec.name, seed=seed)
        train_pixels = splits.train_pixels.numpy()
        chosen = np.random.default_rng(seed).choice(
            len(train_pixels), size=min(calibration_samples, len(train_pixels)), replace=False
        )
        eval_pixels, eval_labels = splits.test_pixels.numpy(), splits.test_labels.numpy()
        if eval_samples is not None:
            eval_pixels, eval_labels = eval_pixels[:eval_samples], eval_labels[:eval_samples]
        calibration = np.ascontiguousarray(train_pixels[np.sort(chosen)])
        return ChoiceData(calibration, eval_pixels, eval_labels, source=_data_source(spec))
    calibration_pixels, _ = sample_inputs(spec.name, calibration_samples, seed=seed + 1)
    eval_pixels, _ = sample_inputs(spec.name, eval_samples or 128, seed=seed)
    return ChoiceData(calibration_pixels, eval_pixels, None, source=_data_source(spec))


def _data_source(spec: ModelSpec) -> str:
    if spec.trained:
        return "calibration: training split; evaluation: held-out split"
    return "untrained model, no training split: calibration and evaluation are disjoint generator draws"


def choose_for_deployable(
    name: str,
    *,
    runs_dir: Path = RUNS_DIR,
    repository: Path | None = None,
    reports_dir: Path | None = None,
    settings: ChoiceSettings | None = None,
    eval_samples: int | None = None,
    calibration_samples: int = 128,
) -> CpuChoiceReport:
    """Export and verify the fp32 ONNX of a deployable, build and measure its CPU variants, serve the pick.

    Args:
        name: a deployable name (its trained run in `runs_dir/NAME` when there is one) or a run folder.
        runs_dir: parent of run folders; the variants and the table go to `runs_dir/NAME/cpu_variants/`.
        repository: when given, `repository/NAME` is rewritten (new version) to serve the pick.
        reports_dir: when given, the table is also written as `reports_dir/NAME.json` and `.md`.
        settings: budgets, candidates and timing (default: `ChoiceSettings()`).
        eval_samples, calibration_samples: see `choice_data`.

    Raises:
        ExportError, ParityError: the fp32 export failed or does not match PyTorch (nothing downstream uses it).
    """
    import tempfile

    from attnserve.export.pipeline import ExportOptions, export_module
    from attnserve.models.checkpoint import resolve

    # untrained models are allowed here on purpose: their variants are gated on logit cosine, not accuracy
    model, spec = resolve(name, Path(runs_dir), allow_untrained=True)
    variants_dir = Path(runs_dir) / spec.name / "cpu_variants"
    # The project's export pipeline (dynamo -> verified ONNX), reduced to the fp32 graph: its own work folder,
    # so a full export's artefacts and report under runs/NAME/export stay as they are. Its repository entry
    # goes to a scratch folder; `serve_pick` writes the real one.
    with tempfile.TemporaryDirectory(prefix="attnserve-cpu-variants-") as scratch:
        export_report = export_module(
            model,
            spec,
            Path(scratch),
            work_dir=variants_dir / "fp32_export",
            options=ExportOptions(explain=False, optimize=False, fp16=False, tensorrt=False),
        )
    if export_report.parity is None or not export_report.parity.ok:
        raise ExportError(f"the fp32 export of {spec.name!r} is not verified; see {export_report.work_dir}")
    fp32_onnx = export_report.onnx.onnx_path if export_report.onnx else variants_dir / "fp32_export" / FP32_FILENAME
    del model  # the PyTorch model is not needed for timing; free its memory before the sessions load
    data = choice_data(spec, eval_samples=eval_samples, calibration_samples=calibration_samples)
    report = choose_cpu_variant(spec, fp32_onnx, variants_dir, data, settings)
    if reports_dir is not None:
        report.write_json(Path(reports_dir) / f"{spec.name}.json")
        (Path(reports_dir) / f"{spec.name}.md").write_text(render_markdown(report))
    if repository is not None:
        serve_pick(spec, report, Path(repository))
    return report
