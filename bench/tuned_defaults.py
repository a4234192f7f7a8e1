"""The deployables' default serving configuration (chosen by `attnserve tune`) against the alternatives, one run.

For each model, one real Triton serves, from one ONNX file, entries that differ only in their serving knobs:

- `NAME`            the deployable's default configuration (`default_spec(NAME)`: what tune found, docs/tuning.md);
- `NAME_nobatch`    dynamic batching off, one instance, threads = cores, spinning on (the runtime's defaults);
- `NAME_nobatch_same_threads` the default configuration with dynamic batching off (what the batcher costs);
- `NAME_handpicked` the hand-picked configuration the project shipped before: 2 ms delay, preferred 4/8/16;
- `NAME_best16`     the candidate with the highest throughput at concurrency 16 in the tune report
                    (`reports/tune/NAME.json`), when there is one.

The load tester sweeps each entry over the same concurrencies (pairs measured in the same server run). Also
measured: the in-process ONNX Runtime p50 at batch 1 with the default configuration's threads and spinning (what
the server adds to one request), and, for `vit_tiny_patch16_224` served with its picked CPU variant
(`runs/NAME/cpu_variants`, from `attnserve cpu-variants`), the in-process throughput of that variant at the batch
size Triton formed at concurrency 16.

    python -m bench.tuned_defaults                              # vit_digits, cnn_cbam_digits (trained runs)
    python -m bench.tuned_defaults --models vit_tiny_patch16_224 --concurrency 16

Writes reports/bench/tuned_defaults.json; ratios mean something only within one run (the JSON records the load).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from attnserve.catalogue import HANDPICKED_SERVING, NOBATCH_SERVING, handpicked_twin
from attnserve.defaults import REPORTS_DIR, RUNS_DIR
from bench import BENCH_REPORTS_DIR

log = logging.getLogger("bench.tuned_defaults")


def _entries(name: str, spec: Any, tune_report: Path) -> dict[str, Any]:
    """Entry name -> spec for the four configurations (best16 only when the tune report exists)."""
    from attnserve.tune.candidates import Candidate

    entries = {
        name: spec,
        f"{name}_nobatch": handpicked_twin(spec, f"{name}_nobatch", NOBATCH_SERVING),
        # the default's own threads with the batcher off: isolates what the batcher costs a lone request
        f"{name}_nobatch_same_threads": spec.replace(name=f"{name}_nobatch_same_threads").with_serving(
            dynamic_batching=False
        ),
        f"{name}_handpicked": handpicked_twin(spec, f"{name}_handpicked", HANDPICKED_SERVING),
    }
    if tune_report.is_file():
        results = [r for r in json.loads(tune_report.read_text())["candidates"] if r["status"] == "ok"]
        at16 = [(f["throughput"], r) for r in results for f in r["levels"] if f["level"] == 16]
        if at16:
            best = Candidate.model_validate(max(at16, key=lambda pair: pair[0])[1]["candidate"])
            entries[f"{name}_best16"] = best.apply_to(spec).replace(name=f"{name}_best16")
    return entries


def _variant(name: str, runs_dir: Path) -> Any | None:
    """The picked CPU variant of `attnserve cpu-variants` (None when the model was not optimised)."""
    table = runs_dir / name / "cpu_variants" / "cpu_variants.json"
    if not table.is_file():
        return None
    from attnserve.tune.candidates import Variant

    data = json.loads(table.read_text())
    row = next(r for r in data["rows"] if r["variant"] == data["picked"])
    path = (table.parent / row["model_file"]).resolve()
    return Variant(
        name=row["variant"],
        runtime=row["runtime"],
        precision=row["precision"],
        model_file=row["model_file"],
        path=str(path),
    )


def in_process(onnx_path: Path, spec: Any, batch: int, seconds: float, variant: Any | None = None) -> dict[str, float]:
    """p50 latency (ms) and throughput (img/s) of `batch`-sample runs in the server's CPU runtime and threads."""
    from attnserve.runtimes.session import intra_op_threads_for, open_session

    threads = spec.runtime.intra_op_threads or intra_op_threads_for(spec.serving.instance_count)
    options = {"allow_spinning": "1" if spec.runtime.allow_spinning else "0"}
    runtime, path = "onnxruntime", onnx_path
    if variant is not None:
        runtime, path = variant.runtime, Path(variant.path)
        options["precision"] = variant.precision
    session = open_session(runtime, path, intra_op_threads=threads, options=options)
    pixels = np.random.default_rng(0).integers(0, 256, (batch, *spec.io.input_shape), dtype=np.uint8)
    for _ in range(3):
        session.run({"pixels": pixels})
    timings: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(timings) < 20:
        started = time.perf_counter()
        session.run({"pixels": pixels})
        timings.append(time.perf_counter() - started)
    median = float(np.median(timings))
    return {"batch": batch, "threads": threads, "p50_ms": median * 1e3, "throughput_img_s": batch / median}


def _sweep(settings: Any, entry: str, concurrency: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    from attnserve.clients.loadtest import LoadTestOptions, run_loadtest

    report = run_loadtest(
        settings,
        entry,
        LoadTestOptions(
            concurrency=concurrency, warmup_s=args.warmup_s, window_s=args.window_s, max_windows=args.max_windows
        ),
    )
    return [
        {
            "concurrency": level.concurrency,
            "throughput": round(level.throughput_infer_s, 1),
            "p50_ms": round(level.latency.p50_ms, 3),
            "p99_ms": round(level.latency.p99_ms, 3),
            "avg_batch": round(level.server.avg_batch_size, 2),
            "queue_us": round(level.server.queue_us, 1),
            "compute_infer_us": round(level.server.compute_infer_us, 1),
            "compute_input_us": round(level.server.compute_input_us, 1),
            "compute_output_us": round(level.server.compute_output_us, 1),
            "client_cpu_us_per_request": round(level.client_cpu_us_per_request, 1),
            "counts_agree": level.client_success == level.server_success,
        }
        for level in report.levels
    ]


def _prepare(name: str, repository: Path, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Export `name` once and write its entries; returns what the measurement needs."""
    from attnserve.catalogue import default_spec
    from attnserve.export.torch2onnx import export_onnx
    from attnserve.models.checkpoint import resolve
    from attnserve.repository.entries import write_model_entry
    from attnserve.tune.apply import apply_candidate
    from attnserve.tune.candidates import Candidate

    model, run_spec = resolve(name, args.runs_dir)
    defaults = default_spec(name)  # the run's spec.json may predate the tuned defaults: take the knobs from here
    spec = Candidate.from_spec(defaults).apply_to(run_spec)
    onnx_path = scratch / f"{name}.onnx"
    export_onnx(model, spec, onnx_path)
    del model
    variant = _variant(name, args.runs_dir) if name == "vit_tiny_patch16_224" else None
    entries = {name: spec} if variant is not None else _entries(name, spec, args.tune_reports / f"{name}.json")
    for entry_spec in entries.values():
        write_model_entry(entry_spec, onnx_path, repository, version=1)
    if variant is not None:
        apply_candidate(repository, name, Candidate.from_spec(spec).model_copy(update={"variant": variant}))
    return {"spec": spec, "onnx_path": onnx_path, "entries": list(entries), "variant": variant}


def _ratios(name: str, sweeps: dict[str, list[dict[str, Any]]], tune_report: Path) -> dict[str, Any]:
    def at(entry: str, concurrency: int) -> dict[str, Any] | None:
        return next((r for r in sweeps.get(entry, []) if r["concurrency"] == concurrency), None)

    ratios: dict[str, Any] = {}
    default1, off1 = at(name, 1), at(f"{name}_nobatch", 1)
    if default1 and off1:
        ratios["c1_default_over_batching_off"] = round(default1["throughput"] / off1["throughput"], 3)
    same1 = at(f"{name}_nobatch_same_threads", 1)
    if default1 and same1:
        ratios["c1_default_over_batching_off_same_threads"] = round(default1["throughput"] / same1["throughput"], 3)
    default16 = at(name, 16)
    best16 = at(f"{name}_best16", 16)
    if default16 and best16:
        ratios["c16_default_over_best_candidate_same_run"] = round(default16["throughput"] / best16["throughput"], 3)
    if default16 and tune_report.is_file():
        tuned = json.loads(tune_report.read_text())
        best = max(
            (
                f["throughput"]
                for r in tuned["candidates"]
                if r["status"] == "ok"
                for f in r["levels"]
                if f["level"] == 16
            ),
            default=None,
        )
        if best:
            ratios["c16_default_over_best_in_tune_run"] = round(default16["throughput"] / best, 3)
            ratios["tune_run_best_c16"] = round(best, 1)
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", default="vit_digits,cnn_cbam_digits", help="comma list of deployables (default: %(default)s)"
    )
    parser.add_argument("--concurrency", default="1,4,16", help="comma list of levels (default: %(default)s)")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="warm-up per level, s (default: %(default)s)")
    parser.add_argument("--window-s", type=float, default=2.0, help="one window, s (default: %(default)s)")
    parser.add_argument(
        "--max-windows", type=int, default=5, help="windows until stable, at most (default: %(default)s)"
    )
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="trained runs (default: %(default)s)")
    parser.add_argument(
        "--tune-reports",
        type=Path,
        default=REPORTS_DIR / "tune",
        help="tune reports for NAME_best16 (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=BENCH_REPORTS_DIR / "tuned_defaults.json", help="JSON report (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from attnserve.clients.settings import ClientSettings
    from attnserve.serving.flags import TritonEndpoints
    from attnserve.serving.runtime_view import build_runtime_repository
    from attnserve.serving.server import TritonServer

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    concurrency = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, Any] = {
        "benchmark": "tuned default configuration vs batching off vs hand-picked (2 ms) vs tune's best at c=16",
        "command": "python -m bench.tuned_defaults " + " ".join(sys.argv[1:] if argv is None else argv),
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="attnserve-bench-tuned-") as scratch_name:
        scratch = Path(scratch_name)
        repository = scratch / "model_repository"
        prepared = {name: _prepare(name, repository, scratch, args) for name in names}
        view, loaded, _ = build_runtime_repository(repository, scratch / "runtime")
        with TritonServer(view, models=loaded, endpoints=TritonEndpoints.any_free(), work_dir=scratch / "s") as server:
            settings = ClientSettings(url=server.grpc_url, protocol="grpc")
            for name, facts in prepared.items():
                results["models"][name] = _measure(name, facts, settings, concurrency, args)
    results["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def _measure(
    name: str, facts: dict[str, Any], settings: Any, concurrency: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    spec = facts["spec"]
    sweeps: dict[str, list[dict[str, Any]]] = {entry: [] for entry in facts["entries"]}
    for level in concurrency:  # entries interleaved per level: drift in the machine's load hits them alike
        for entry in facts["entries"]:
            log.info("measuring %s at concurrency %d", entry, level)
            sweeps[entry] += _sweep(settings, entry, [level], args)
    result: dict[str, Any] = {
        "default_config": {**spec.serving.model_dump(), **spec.runtime.model_dump()},
        "sweeps": sweeps,
        "ratios": _ratios(name, sweeps, args.tune_reports / f"{name}.json"),
        "in_process_b1": in_process(facts["onnx_path"], spec, 1, 2.0, facts["variant"]),
    }
    first = sweeps[name][0]
    if first["concurrency"] == 1:
        result["served_p50_c1_ms"] = first["p50_ms"]
        result["served_minus_in_process_p50_ms"] = round(first["p50_ms"] - result["in_process_b1"]["p50_ms"], 3)
    if facts["variant"] is not None:
        at16 = next((r for r in sweeps[name] if r["concurrency"] == 16), sweeps[name][-1])
        batch = max(1, round(at16["avg_batch"]))
        formed = in_process(facts["onnx_path"], spec, batch, 3.0, facts["variant"])
        result["variant"] = facts["variant"].name
        result["in_process_at_formed_batch"] = formed
        result["ratios"]["c16_served_over_in_process_at_formed_batch"] = round(
            at16["throughput"] / formed["throughput_img_s"], 3
        )
    print(f"\n{name}: {json.dumps(result['ratios'])}")
    for entry, rows in sweeps.items():
        cells = ", ".join(
            f"c={r['concurrency']}: {r['throughput']:,.0f}/s p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f}" for r in rows
        )
        print(f"  {entry:<28} {cells}")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
