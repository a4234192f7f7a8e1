"""Why the ModelSpec leaves Triton's queue policy off by default: the same model, batched, with and without a
bounded `default_queue_policy`, driven by sequential requests (one in flight), in one server run.

    python -m bench.queue_policy [--requests 300]

On Triton 2.51 (the nvidia-pytriton wheel; NGC 24.10) the bounded entry stalls ~0.5 s every few hundred
requests; prints p50/p99/max per entry, the p99 ratio, and writes reports/bench/queue_policy.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import BENCH_REPORTS_DIR

MODEL = "cnn_cbam_digits"


def _export_tiny(name: str, root: Path) -> Path:
    """Export the tiny variant of deployable `name` (random weights, no explain twin) into `root/exported`.

    Returns:
        The ONNX file its entry serves.
    """
    from attnserve.errors import ExportError
    from attnserve.export.pipeline import ExportOptions, export_model
    from attnserve.models.registry import tiny_arch_overrides
    from attnserve.repository.entries import served_file

    overrides = tiny_arch_overrides(name)
    report = export_model(
        name,
        root / "exported",
        runs_dir=root / "runs",
        options=ExportOptions(explain=False, optimize=False),
        **overrides,
    )
    onnx_path = served_file(report.entries[name]) if report.ok else None
    if onnx_path is None:
        raise ExportError(f"exporting {name} failed: {[(s.stage, s.reason) for s in report.stages]}")
    return onnx_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per entry")
    parser.add_argument("--out", type=Path, default=BENCH_REPORTS_DIR / "queue_policy.json")
    args = parser.parse_args(argv)

    from attnserve.clients.client import TritonClient
    from attnserve.clients.settings import ClientSettings
    from attnserve.repository.entries import read_entry_spec, write_model_entry
    from attnserve.serving.flags import TritonEndpoints
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.serving.server import ServerProcess, TritonServer

    with tempfile.TemporaryDirectory(prefix="attnserve-queue-policy-") as scratch:
        root = Path(scratch)
        onnx_path = _export_tiny(MODEL, root)
        spec = read_entry_spec(root / "exported" / MODEL)
        variants = {
            "no_queue_policy": spec.replace(name="q_unbounded").with_serving(max_queue_size=0, queue_timeout_us=0),
            "bounded_queue_policy": spec.replace(name="q_bounded").with_serving(
                max_queue_size=256, queue_timeout_us=5_000_000
            ),
        }
        for variant in variants.values():
            write_model_entry(variant, onnx_path, root / "repository", version=1)
        view, loaded, _ = build_runtime_repository(root / "repository", root / "view")
        results: dict[str, dict[str, float]] = {}
        with TritonServer(
            view, models=loaded, endpoints=TritonEndpoints.any_free(), process=ServerProcess(exit_timeout_s=5)
        ) as server:
            with TritonClient(ClientSettings(url=server.grpc_url, protocol="grpc")) as client:
                pixels = np.zeros((1, *spec.io.input_shape), np.uint8)
                for label, variant in variants.items():
                    for _ in range(20):  # warm-up
                        client.infer(variant.name, {"pixels": pixels})
                    latencies_ms = []
                    for _ in range(args.requests):
                        started = time.perf_counter()
                        client.infer(variant.name, {"pixels": pixels})
                        latencies_ms.append((time.perf_counter() - started) * 1e3)
                    values = np.array(latencies_ms)
                    results[label] = {
                        "p50_ms": round(float(np.percentile(values, 50)), 2),
                        "p99_ms": round(float(np.percentile(values, 99)), 2),
                        "max_ms": round(float(values.max()), 2),
                        "requests_over_100ms": int((values > 100).sum()),
                    }
                    print(f"{label:>22}: {results[label]}")
    ratio = results["bounded_queue_policy"]["p99_ms"] / results["no_queue_policy"]["p99_ms"]
    print(f"p99 bounded / unbounded: {ratio:.1f}x ({args.requests} sequential requests each, one server run)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"requests": args.requests, "results": results, "p99_ratio": ratio}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
