"""A long run loses nothing and grows nothing: a mixed load at a fixed share of measured capacity for minutes.

    python -m bench.soak                                  # 10 minutes against `attnserve serve`
    python -m bench.soak --minutes 30 --replicas 2        # through `attnserve replicas` (HAProxy in front)
    python -m bench.soak --repository model_repository --image-model vit_digits --video-model timesformer_motion

Starts the real server as a user does (`attnserve serve`, or `attnserve replicas` with `--replicas N`), measures
its capacity for the request mix with a short closed loop, then sends the mix open-loop (requests start on a
fixed schedule, whether or not earlier ones finished) at `--load` of that capacity (default 70%): uint8 pixels to
the image model, encoded image bytes to its `NAME_pipeline`, short videos to the video model's `NAME_timeline`.
Every `--interval-s` (default 60 s) it records throughput, p50/p99 latency, errors by kind and the resident
memory (RSS) of every tritonserver, every python-backend stub (by model) and HAProxy.

The run fails (exit 1) when any request fails, when p99 of the last five minutes is more than 50% above the
first five (runs of 10 minutes or more), or when a process's RSS grows by more than 10% between minute 2 and the
end (runs of 3 minutes or more). Without `--repository` it exports `vit_shapes` and `timesformer_motion` with
random weights (timing only). Writes reports/bench/soak.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import BENCH_REPORTS_DIR

DRIFT_LIMIT = 0.5  # p99 of the last window may be at most 50% above the first
GROWTH_LIMIT = 0.10  # RSS at the end may be at most 10% above its value at minute 2
WINDOW_MIN = 5.0  # minutes compared for drift
MEMORY_BASELINE_S = 120.0
MAX_IN_FLIGHT = 256  # a bound on the open loop's outstanding requests (a stalled server must not exhaust memory)


# ---------------------------------------------------------------------------------------------------------
# the server under test
# ---------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _export_repository(root: Path, image_model: str, video_model: str) -> Path:
    """Both models with random weights (timing only) and their pipeline/timeline entries."""
    from attnserve.export.pipeline import ExportOptions, export_model
    from attnserve.serving.pipelines import write_pipeline_entries

    repository = root / "model_repository"
    for name in (image_model, video_model):
        report = export_model(
            name, repository, runs_dir=root / "runs", options=ExportOptions(explain=False), untrained=True
        )
        write_pipeline_entries(report.spec, repository)
    return repository


def _start_server(args: argparse.Namespace, repository: Path, work_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`attnserve serve` (or `replicas`) as a child process; returns it and its HTTP host:port once ready."""
    http_port, grpc_port = _free_port(), _free_port()
    command = [str(Path(sys.executable).parent / "attnserve")]
    if args.replicas:
        command += ["replicas", "--replicas", str(args.replicas), "--work-dir", str(work_dir / "replicas")]
        command += ["--queue-timeout-ms", str(args.queue_timeout_ms)]
    else:
        command += ["serve", "--metrics-port", str(_free_port()), "--work-dir", str(work_dir / "serve")]
    command += ["--repository", str(repository), "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    log = (work_dir / "server.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"127.0.0.1:{http_port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}); see {work_dir / 'server.log'}")
        try:
            with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return process, f"127.0.0.1:{grpc_port}"
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"the server was not ready in 300 s; see {work_dir / 'server.log'}")


def _stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


# ---------------------------------------------------------------------------------------------------------
# processes and their memory
# ---------------------------------------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def _process_names(root_pid: int) -> dict[int, str]:
    """Every tritonserver, python-backend stub (named by its model) and HAProxy under `root_pid`."""
    from attnserve.serving.watchdog import stub_pids

    tree, found, todo = _children(), {}, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if name == "tritonserver":
            found[pid] = f"tritonserver[{pid}]"
            found.update({stub: f"stub:{model}[server {pid}]" for stub, model in stub_pids(pid).items()})
        elif name == "haproxy":
            found[pid] = f"haproxy[{pid}]"
    return found


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------------------
# the request mix
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Mix:
    """What each kind of request sends, and how often (weights)."""

    image_model: str
    video_model: str
    pixels: np.ndarray
    image_bytes: bytes
    video_bytes: bytes
    weights: dict[str, float] = field(default_factory=lambda: {"image": 0.45, "pipeline": 0.45, "timeline": 0.10})

    def pick(self, rng: random.Random) -> str:
        return rng.choices(list(self.weights), weights=list(self.weights.values()))[0]


def _mix(image_model: str, video_model: str, image_shape: tuple[int, ...], video_shape: tuple[int, ...]) -> Mix:
    import io

    import av
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, image_shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    frames, height, width = max(video_shape[0] * 2, 16), 64, 96
    video = io.BytesIO()
    with av.open(video, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
            image[20:36, (index * 5) % (width - 16) :][:, :16] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Mix(image_model, video_model, pixels, buffer.getvalue(), video.getvalue())


async def _send(client: Any, mix: Mix, kind: str) -> None:
    from attnserve.spec import pipeline_name

    if kind == "image":
        await client.classify(mix.image_model, [mix.pixels], top_k=1)
    elif kind == "pipeline":
        await client.classify_encoded(pipeline_name(mix.image_model), [mix.image_bytes], top_k=1)
    else:
        await client.timeline(mix.video_model, mix.video_bytes, window_s=0, top_k=1)


# ---------------------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Interval:
    """One recording interval: latencies (ms) by kind and errors by kind."""

    started_s: float
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def record(self, kind: str, latency_ms: float, error: BaseException | None) -> None:
        if error is None:
            self.latencies_ms.setdefault(kind, []).append(latency_ms)
        else:
            key = f"{kind}:{type(error).__name__}"
            self.errors[key] = self.errors.get(key, 0) + 1


async def _timed(client: Any, mix: Mix, kind: str, interval: Interval) -> None:
    started = time.perf_counter()
    try:
        await _send(client, mix, kind)
    except Exception as exc:  # noqa: BLE001 - every failure is counted by kind, none may pass silently
        interval.record(kind, 0.0, exc)
    else:
        interval.record(kind, (time.perf_counter() - started) * 1000, None)


async def _capacity(client: Any, mix: Mix, concurrency: int, seconds: float) -> float:
    """Requests per second of the mix in a closed loop at `concurrency` (the open loop's reference)."""
    rng, done, deadline = random.Random(1), 0, time.monotonic() + seconds
    scratch = Interval(0.0)

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await _timed(client, mix, mix.pick(rng), scratch)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if scratch.errors:
        raise SystemExit(f"requests failed while measuring capacity: {scratch.errors}")
    return done / (time.monotonic() - started)


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def _interval_row(interval: Interval, end_s: float, processes: dict[int, str]) -> dict[str, Any]:
    """The row of one interval; `t_s` is its end (when the memory was read), in seconds from the start."""
    every = [v for values in interval.latencies_ms.values() for v in values]
    rss = {name: _rss_mib(pid) for pid, name in processes.items()}
    seconds = max(end_s - interval.started_s, 1e-3)
    return {
        "t_s": round(end_s, 1),
        "requests": len(every) + sum(interval.errors.values()),
        "req_per_s": round(len(every) / seconds, 1),
        "p50_ms": _percentile(every, 50),
        "p99_ms": _percentile(every, 99),
        "p99_ms_by_kind": {kind: _percentile(values, 99) for kind, values in interval.latencies_ms.items()},
        "errors": dict(interval.errors),
        "rss_mib": {name: round(value, 1) for name, value in rss.items() if value is not None},
    }


async def _open_loop(client: Any, mix: Mix, rate: float, options: argparse.Namespace, root_pid: int) -> list[dict]:
    """Start requests every 1/rate s for `options.minutes`, recording an interval row every `interval_s`."""
    rng, rows, pending = random.Random(2), [], set()
    started = time.monotonic()
    end = started + options.minutes * 60
    interval, next_start, next_row = Interval(0.0), started, started + options.interval_s
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_row:
            rows.append(_interval_row(interval, now - started, _process_names(root_pid)))
            _print_row(rows[-1])
            interval, next_row = Interval(now - started), next_row + options.interval_s
        if len(pending) < MAX_IN_FLIGHT:
            task = asyncio.ensure_future(_timed(client, mix, mix.pick(rng), interval))
            pending.add(task)
            task.add_done_callback(pending.discard)
        else:
            interval.record("generator", 0.0, OverflowError(f"{MAX_IN_FLIGHT} requests outstanding"))
        next_start += 1 / rate
        await asyncio.sleep(max(0.0, next_start - time.monotonic()))
    await asyncio.gather(*pending)
    rows.append(_interval_row(interval, time.monotonic() - started, _process_names(root_pid)))
    _print_row(rows[-1])
    return rows


def _print_row(row: dict[str, Any]) -> None:
    """One line per interval; the JSON report keeps every process's RSS."""
    groups: dict[str, list[float]] = {}
    for name, mib in row["rss_mib"].items():
        groups.setdefault(name.split(":")[0].split("[")[0], []).append(mib)
    memory = ", ".join(
        f"{group} {len(v)} x {min(v):.0f}-{max(v):.0f} (sum {sum(v):.0f})" for group, v in groups.items()
    )
    errors = sum(row["errors"].values())
    print(
        f"t={row['t_s']:7.1f}s  {row['req_per_s']:7.1f} req/s  p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms  "
        f"errors {errors}  RSS MiB: {memory}",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------------------
# the verdict
# ---------------------------------------------------------------------------------------------------------
def _window_p99(rows: list[dict[str, Any]], first: bool, window_s: float) -> float | None:
    end = rows[-1]["t_s"]
    chosen = [r for r in rows if (r["t_s"] <= window_s + 1 if first else r["t_s"] > end - window_s + 1)]
    values = [r["p99_ms"] for r in chosen if r["p99_ms"] is not None]
    return float(np.median(values)) if values else None


def verdict(rows: list[dict[str, Any]], minutes: float) -> dict[str, Any]:
    """Failures, p99 drift and memory growth of a run (see the module docstring for the limits)."""
    failed = sum(sum(row["errors"].values()) for row in rows)
    result: dict[str, Any] = {"failed_requests": failed, "problems": []}
    if failed:
        result["problems"].append(f"{failed} requests failed")
    if minutes >= 2 * WINDOW_MIN:
        first, last = _window_p99(rows, True, WINDOW_MIN * 60), _window_p99(rows, False, WINDOW_MIN * 60)
        drift = (last / first - 1) if first and last else None
        result["p99_drift"] = {"first_ms": first, "last_ms": last, "drift": None if drift is None else round(drift, 3)}
        if drift is not None and drift > DRIFT_LIMIT:
            result["problems"].append(f"p99 drifted {drift:+.0%} (limit +{DRIFT_LIMIT:.0%})")
    if minutes * 60 > MEMORY_BASELINE_S + 60:
        baseline = next(r for r in rows if r["t_s"] >= MEMORY_BASELINE_S - 1e-6)
        growth = {
            name: round(rows[-1]["rss_mib"][name] / mib - 1, 4)
            for name, mib in baseline["rss_mib"].items()
            if name in rows[-1]["rss_mib"]
        }
        result["memory_growth"] = growth
        result["memory_baseline_t_s"] = baseline["t_s"]
        result["problems"] += [f"{n} RSS grew {g:+.1%}" for n, g in growth.items() if g > GROWTH_LIMIT]
        result["problems"] += [f"{n} ended during the run" for n in baseline["rss_mib"] if n not in rows[-1]["rss_mib"]]
    result["ok"] = not result["problems"]
    return result


# ---------------------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the open-loop run (default 10)")
    parser.add_argument("--replicas", type=int, default=0, help="N > 0: `attnserve replicas --replicas N`")
    parser.add_argument(
        "--queue-timeout-ms",
        type=int,
        default=1000,
        help="with --replicas: HAProxy's wait for a free replica before 503; the soak looks for leaks, so bursts of "
        "the open loop wait instead of being shed (admission control is tested apart) (default 1000)",
    )
    parser.add_argument("--load", type=float, default=0.7, help="share of the measured capacity sent (default 0.7)")
    parser.add_argument("--interval-s", type=float, default=60.0, help="seconds per recorded row (default 60)")
    parser.add_argument("--probe-s", type=float, default=20.0, help="closed-loop capacity measurement (default 20)")
    parser.add_argument("--probe-concurrency", type=int, default=8, help="in flight while probing (default 8)")
    parser.add_argument("--repository", type=Path, default=None, help="an exported repository (default: export both)")
    parser.add_argument("--image-model", default="vit_shapes", help="image model (its NAME_pipeline is used too)")
    parser.add_argument("--video-model", default="timesformer_motion", help="video model (its NAME_timeline)")
    parser.add_argument("--out", type=Path, default=BENCH_REPORTS_DIR / "soak.json", help="JSON report")
    return parser


async def _drive(args: argparse.Namespace, grpc_url: str, root_pid: int) -> dict[str, Any]:
    from attnserve.clients.client import AsyncTritonClient
    from attnserve.clients.settings import ClientSettings

    settings = ClientSettings(url=grpc_url, protocol="grpc", retries=0)
    async with AsyncTritonClient(settings) as client:
        image_info, video_info = await client.model_info(args.image_model), await client.model_info(args.video_model)
        image_shape = image_info.sample_shape(image_info.inputs[0])
        video_shape = video_info.sample_shape(video_info.inputs[0])
        mix = _mix(args.image_model, args.video_model, image_shape, video_shape)
        capacity = await _capacity(client, mix, args.probe_concurrency, args.probe_s)
        rate = capacity * args.load
        print(
            f"capacity {capacity:.1f} req/s (closed loop, {args.probe_concurrency} in flight); sending {rate:.1f} req/s"
        )
        rows = await _open_loop(client, mix, rate, args, root_pid)
    return {"capacity_req_per_s": round(capacity, 1), "rate_req_per_s": round(rate, 1), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="attnserve-soak-") as scratch:
        work_dir = Path(scratch)
        repository = args.repository or _export_repository(work_dir, args.image_model, args.video_model)
        process, grpc_url = _start_server(args, repository, work_dir)
        try:
            measured = asyncio.run(_drive(args, grpc_url, process.pid))
        finally:
            _stop_server(process)
    result = verdict(measured["rows"], args.minutes)
    report = {"command": " ".join(["python -m bench.soak", *(argv if argv is not None else sys.argv[1:])]),
              "minutes": args.minutes, "replicas": args.replicas, "load": args.load,
              "load_average": os.getloadavg(), **measured, "verdict": result}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{'OK' if result['ok'] else 'FAILED'}: {'; '.join(result['problems']) or 'no failed request'} -> {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
