"""ONNX Runtime (optimised) vs PyTorch eager: latency and throughput of vit_tiny_patch16_224 at batch 1 and 16.

    python -m bench.export_bench [--rounds 7] [--out reports/bench/export.json]

The model is exported and verified with the project's own pipeline functions (`export_onnx`,
`verify_onnx`); ONNX Runtime runs the verified graph with all its graph optimisations on (what the CPU
runner does). Both runtimes run in this process on the same cores, interleaved round by round, and the
median of each is kept: compare the ratios, which are measured in one run, not absolute figures across
machines (docs/measured.md#ort-fusion).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnserve.export.torch2onnx import example_pixels, export_onnx
from attnserve.export.verify import ort_session, verify_onnx
from attnserve.models.checkpoint import resolve
from attnserve.spec import INPUT_NAME
from bench import BENCH_REPORTS_DIR

MODEL_NAME = "vit_tiny_patch16_224"
BATCH_SIZES = (1, 16)


def _elapsed_ms(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000.0


def time_batch(model: torch.nn.Module, session: Any, spec: Any, batch_size: int, rounds: int) -> dict[str, Any]:
    """Median ms of eager torch and ONNX Runtime on one batch, timed in interleaved rounds."""
    pixels = example_pixels(spec, batch_size)
    pixels_np = pixels.numpy()

    def run_torch(pixels: torch.Tensor = pixels) -> None:
        with torch.inference_mode():
            model(pixels)

    def run_ort(pixels_np: np.ndarray = pixels_np) -> None:
        session.run(None, {INPUT_NAME: pixels_np})

    run_torch(), run_ort()  # warm-up
    torch_samples, ort_samples = [], []
    for _ in range(rounds):  # interleaved: machine noise hits both alike
        torch_samples.append(_elapsed_ms(run_torch))
        ort_samples.append(_elapsed_ms(run_ort))
    torch_ms, ort_ms = statistics.median(torch_samples), statistics.median(ort_samples)
    return {
        "batch_size": batch_size,
        "torch_eager_ms": round(torch_ms, 2),
        "ort_ms": round(ort_ms, 2),
        "torch_eager_img_per_s": round(batch_size * 1000.0 / torch_ms, 1),
        "ort_img_per_s": round(batch_size * 1000.0 / ort_ms, 1),
        "ort_speedup": round(torch_ms / ort_ms, 3),
    }


def print_summary(summary: dict[str, Any]) -> None:
    onnx = summary["onnx"]
    print(
        f"{MODEL_NAME}: ONNX ({onnx['exporter']}, opset {onnx['opset']}, "
        f"{onnx['attention_nodes']} Attention nodes, max abs diff {onnx['max_abs_diff_vs_torch']:.2g})"
    )
    print(f"{'batch':>5} {'torch ms':>9} {'ORT ms':>8} {'torch img/s':>12} {'ORT img/s':>10} {'ORT/torch':>9}")
    for row in summary["results"]:
        print(
            f"{row['batch_size']:>5} {row['torch_eager_ms']:>9} {row['ort_ms']:>8} {row['torch_eager_img_per_s']:>12} "
            f"{row['ort_img_per_s']:>10} {row['ort_speedup']:>8}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds per batch size (median)")
    parser.add_argument("--out", type=Path, default=BENCH_REPORTS_DIR / "export.json")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="intra-op threads for both runtimes (default: all cores)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, spec = resolve(MODEL_NAME, allow_untrained=True)  # speed does not depend on the weights
    model.eval()
    with tempfile.TemporaryDirectory() as work:
        onnx_path = Path(work) / "model.onnx"
        export_report = export_onnx(model, spec, onnx_path)
        parity = verify_onnx(onnx_path, model, spec, batch_sizes=(1, 2))
        parity.raise_on_failure()
        session = ort_session(onnx_path, optimized=True, threads=args.threads)
        results = [time_batch(model, session, spec, batch_size, args.rounds) for batch_size in BATCH_SIZES]
    summary = {
        "model": MODEL_NAME,
        "onnx": {
            "exporter": export_report.exporter,
            "opset": export_report.opset,
            "attention_nodes": export_report.attention_nodes,
            "max_abs_diff_vs_torch": parity.max_abs_diff(),
        },
        "rounds": args.rounds,
        "threads": args.threads,
        # Other processes on the same cores distort absolute figures (oversubscribed OpenMP threads in
        # particular); the load average says how busy the machine was.
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
