"""ONNX Runtime graph optimisation for CPU serving, kept only when parity holds (and reported honestly).

ORT's extended graph optimisations (`ORT_ENABLE_EXTENDED`: constant folding, node eliminations and the
`com.microsoft` fusions such as SkipLayerNormalization, BiasGelu, FusedMatMul) are applied offline and the
rewritten graph saved. Extended (not "all") keeps the file portable: layout rewrites of `ORT_ENABLE_ALL`
are tied to the machine that ran them. The rewritten graph is verified against the original in ONNX
Runtime, and both are timed in the same run (a few interleaved iterations: CPU is scarce here).
docs/measured.md#ort-fusion records that ORT's fusions gave no speed-up on these CPUs: measure, do not assume.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from attnserve.export.onnx_graph import op_histogram
from attnserve.export.reports import ParityReport
from attnserve.export.stages import ArtefactReport
from attnserve.export.torch2onnx import example_pixels
from attnserve.export.verify import verify_against
from attnserve.spec import INPUT_NAME, ModelSpec

logger = logging.getLogger(__name__)

KEEP_MIN_SPEEDUP = 1.05
"""The optimised graph replaces the original only when parity holds and it is at least this much faster."""


class OrtOptimizationReport(ArtefactReport):
    """What ORT's offline optimisation did to a graph and whether it is worth keeping."""

    source_path: Path
    optimized_path: Path
    level: str
    fused_ops: dict[str, int]
    """Op types that appear (or grow) in the optimised graph: count added."""
    removed_ops: dict[str, int]
    """Op types that shrank: count removed."""
    nodes_before: int
    nodes_after: int
    parity: ParityReport
    batch_size: int
    iterations: int
    source_ms: float
    optimized_ms: float
    speedup: float
    """source_ms / optimized_ms, measured in one run (both graphs run with ORT's own optimisations off)."""
    kept: bool
    reason: str


def _session(onnx_path: Path, *, optimize_to: Path | None = None, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if optimize_to is not None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimize_to)
    else:
        # Run the file as written: the timing compares the two graphs, not ORT's load-time rewrites.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def _interleaved_ms(sessions: list, pixels: np.ndarray, iterations: int) -> list[float]:
    """Median ms per run of each session, alternating them so machine noise hits both alike."""
    feeds = {INPUT_NAME: pixels}
    for session in sessions:
        session.run(None, feeds)  # warm-up
    samples: list[list[float]] = [[] for _ in sessions]
    for _ in range(iterations):
        for index, session in enumerate(sessions):
            started = time.perf_counter()
            session.run(None, feeds)
            samples[index].append((time.perf_counter() - started) * 1000.0)
    return [float(np.median(s)) for s in samples]


def optimize_for_cpu(
    onnx_path: Path,
    spec: ModelSpec,
    optimized_path: Path | None = None,
    *,
    batch_size: int = 1,
    iterations: int = 10,
    threads: int | None = None,
) -> OrtOptimizationReport:
    """Apply ORT's extended offline optimisations, verify against the source graph, time both.

    Args:
        onnx_path: the verified source graph.
        spec: input shape, batch sizes and tolerances.
        optimized_path: where to save the rewritten graph (default `<stem>.ort.onnx` beside the source).
        batch_size: batch used for timing.
        iterations: timed runs per graph (interleaved, median).
        threads: ORT intra-op threads (default: ORT's choice).

    Returns:
        The report; `kept` says whether the rewritten graph should replace the source (parity holds and
        `speedup >= KEEP_MIN_SPEEDUP`). Also written to `<optimized stem>.json`.
    """
    onnx_path = Path(onnx_path)
    optimized_path = Path(optimized_path or onnx_path.with_name(f"{onnx_path.stem}.ort.onnx"))
    _session(onnx_path, optimize_to=optimized_path, threads=threads)  # writes the optimised graph
    before, after = op_histogram(onnx_path), op_histogram(optimized_path)
    fused = {op: after[op] - before.get(op, 0) for op in after if after[op] > before.get(op, 0)}
    removed = {op: before[op] - after.get(op, 0) for op in before if before[op] > after.get(op, 0)}

    source_session = _session(onnx_path, threads=threads)
    optimized_session = _session(optimized_path, threads=threads)
    output_names = [o.name for o in source_session.get_outputs()]

    def reference(pixels: np.ndarray) -> list[np.ndarray]:
        return source_session.run(output_names, {INPUT_NAME: pixels})

    parity = verify_against(optimized_path, reference, spec, session=optimized_session)
    source_ms, optimized_ms = _interleaved_ms(
        [source_session, optimized_session], example_pixels(spec, batch_size).numpy(), iterations
    )
    speedup = source_ms / optimized_ms if optimized_ms > 0 else float("nan")
    if not parity.ok:
        kept, reason = False, "parity failed: " + "; ".join(parity.failures)
    elif speedup < KEEP_MIN_SPEEDUP:
        kept, reason = False, f"no measured gain: {speedup:.2f}x < {KEEP_MIN_SPEEDUP}x (keep the source graph)"
    else:
        kept, reason = True, f"parity holds and {speedup:.2f}x faster"
    report = OrtOptimizationReport(
        source_path=onnx_path,
        optimized_path=optimized_path,
        level="ORT_ENABLE_EXTENDED",
        fused_ops=fused,
        removed_ops=removed,
        nodes_before=sum(before.values()),
        nodes_after=sum(after.values()),
        parity=parity,
        batch_size=batch_size,
        iterations=iterations,
        source_ms=source_ms,
        optimized_ms=optimized_ms,
        speedup=speedup,
        kept=kept,
        reason=reason,
    )
    report.write_json(optimized_path.with_suffix(".json"))
    logger.info("ORT optimisation of %s: %s", onnx_path.name, reason)
    return report
