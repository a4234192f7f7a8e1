"""Which Prometheus signal should the Kubernetes HPA scale Triton on? A real recording, replayed.

    python -m bench.hpa_replay            # ~5 minutes on 2 cores: exports, records, replays
    python -m bench.hpa_replay --quick    # shorter phases (a smoke run; figures not for the docs)

1. Records a real load profile: one replica of the real replica set (`attnserve replicas`: Triton behind HAProxy,
   the chart's edge limits: 16 requests per replica, 10 ms queue) serving four deployables exported with random
   weights (timing only): three image models and the video model `timesformer_motion` (2 ms batching delay), scraped
   by a real Prometheus that evaluates the chart's own recording rules (files/recording_rules.yaml). Profile: idle
   -> trickle (one video request every 5 s) -> one image model saturated (closed loop, 12 in flight; the trickle
   goes on) -> idle.
2. Evaluates candidate signals on that recording with Prometheus range queries: NVIDIA's sample query, the
   request-weighted queue time per request, queue time minus each model's configured delay, pending requests, and
   the compute busy fraction.
3. Feeds each through a **simulation** of the Kubernetes HPA algorithm as documented
   (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#algorithm-details and
   #configurable-scaling-behavior): desiredReplicas = ceil(currentReplicas * currentMetricValue / target), no change
   while the ratio is within the 10% tolerance, the default scale-up policies (4 pods or 100% per period, the larger),
   a scale-down stabilisation window (the highest recommendation within it wins), min/max replicas.

Time is compressed 3x so the recording stays short on shared cores: 5 s scrapes (the chart's ServiceMonitor: 15 s),
the rules' 1m windows read as 20 s (4 scrapes either way), a 5 s HPA period (15 s) and a 100 s stabilisation
window (300 s). The trickle (one request per 5 s) is then one per 15 s at the chart's scale.
The replay is open-loop: the recording has one replica; with n simulated replicas a load signal (busy fraction,
pending requests) is divided by n (the edge spreads requests evenly), a per-request time is kept as recorded.

Prints each candidate's replicas over time side by side and the three verdicts, and writes
reports/bench/hpa_replay.json and reports/bench/hpa_replay.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench import BENCH_REPORTS_DIR

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "kubernetes" / "attnserve" / "files" / "recording_rules.yaml"
VALUES = ROOT / "deploy" / "kubernetes" / "attnserve" / "values.yaml"
MODELS = ("vit_digits", "vit_shapes", "cnn_cbam_digits", "timesformer_motion")
BUSY_MODEL, TRICKLE_MODEL = "vit_digits", "timesformer_motion"
SCALE = 3  # chart seconds per recorded second
SCRAPE_S = 15 // SCALE
WINDOW = f"{4 * SCRAPE_S}s"  # the rules' [1m] = 4 scrapes
HPA_PERIOD_S = 15 // SCALE
STABILISATION_S = 300 // SCALE
TOLERANCE = 0.1
MIN_REPLICAS, MAX_REPLICAS = 1, 4
BUSY_CONCURRENCY = 12
POD = {"namespace": "bench", "pod": "attnserve-0"}


@dataclass
class Candidate:
    """One signal: its PromQL (over the recording), how it scales with replicas, and its target."""

    name: str
    promql: str
    per_load: bool  # True: divided by the simulated replica count; False: a per-request time
    target: float | None = None  # None: chosen from the recording (`choose_target`)
    values: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------------------------
# the recording
# ------------------------------------------------------------------------------------------------------------------
def _export(root: Path) -> Path:
    """The four deployables, random weights, in one CPU runtime view."""
    from attnserve.export.pipeline import ExportOptions, export_model
    from attnserve.serving.runtime_view import build_runtime_repository

    for name in MODELS:
        export_model(
            name, root / "repository", runs_dir=root / "runs", options=ExportOptions(explain=False), untrained=True
        )
    view, loaded, skipped = build_runtime_repository(root / "repository", root / "view", list(MODELS))
    if sorted(loaded) != sorted(MODELS):
        raise SystemExit(f"the runtime view left out models: {skipped}")
    return view


def _queue_delays_us(view: Path) -> dict[str, int]:
    """Each model's configured batching delay, read from the config.pbtxt Triton loads."""
    delays = {}
    for name in MODELS:
        text = (view / name / "config.pbtxt").read_text()
        found = re.search(r"max_queue_delay_microseconds:\s*(\d+)", text)
        delays[name] = int(found.group(1)) if found else 0
    return delays


class Prometheus:
    """The Debian `prometheus` binary scraping one target every SCRAPE_S with the chart's recording rules."""

    def __init__(self, target: str, work_dir: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        rules = RULES.read_text().replace("[1m", f"[{WINDOW}")  # the 3x time compression, nothing else
        (work_dir / "rules.yaml").write_text(rules)
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
            "rule_files": [str(work_dir / "rules.yaml")],
            "scrape_configs": [{"job_name": "triton", "static_configs": [{"targets": [target], "labels": POD}]}],
        }
        (work_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        binary = next(p for p in ("/usr/bin/prometheus", "/usr/local/bin/prometheus") if Path(p).is_file())
        self.log = open(work_dir / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [binary, f"--config.file={work_dir / 'prometheus.yml'}", f"--storage.tsdb.path={work_dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise SystemExit("Prometheus did not become ready in 30 s")

    def range_query(self, promql: str, start: float, end: float) -> list[float]:
        """One value per HPA period from start to end (NaN where the query returns nothing)."""
        query = {"query": promql, "start": start, "end": end, "step": HPA_PERIOD_S}
        with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{urllib.parse.urlencode(query)}") as response:
            body = json.load(response)
        if body["status"] != "success":
            raise SystemExit(f"Prometheus refused {promql}: {body}")
        steps = int(round((end - start) / HPA_PERIOD_S)) + 1
        values = [math.nan] * steps
        for series in body["data"]["result"]:  # one series (one pod) in this recording
            for stamp, value in series["values"]:
                values[int(round((float(stamp) - start) / HPA_PERIOD_S))] = float(value)
        return values

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


async def _profile(grpc_url: str, phases: dict[str, float], marks: dict[str, float]) -> dict[str, Any]:
    """Idle -> trickle -> trickle + one image model saturated -> idle; `marks` gets each phase's start time."""
    from attnserve.clients.client import AsyncTritonClient
    from attnserve.clients.settings import ClientSettings

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (1, 8, 3, 32, 32), dtype=np.uint8)
    digits = rng.integers(0, 256, (1, 1, 32, 32), dtype=np.uint8)
    counts = {"trickle_ok": 0, "trickle_failed": 0, "busy_ok": 0, "busy_failed": 0}
    async with AsyncTritonClient(ClientSettings(url=grpc_url, protocol="grpc", retries=0)) as client:

        async def trickle(until: float) -> None:
            while time.time() < until:
                try:
                    await client.infer(TRICKLE_MODEL, {"pixels": video})
                    counts["trickle_ok"] += 1
                except Exception:  # noqa: BLE001 - a rejection by the edge is counted, the trickle goes on
                    counts["trickle_failed"] += 1
                await asyncio.sleep(SCRAPE_S)

        async def busy_loop(until: float) -> None:
            while time.time() < until:
                try:
                    await client.infer(BUSY_MODEL, {"pixels": digits})
                    counts["busy_ok"] += 1
                except Exception:  # noqa: BLE001 - rejections by the edge's admission control are counted
                    counts["busy_failed"] += 1

        marks["idle_start"] = time.time()
        await asyncio.sleep(phases["idle_start"])
        marks["trickle"] = time.time()
        end_busy = marks["trickle"] + phases["trickle"] + phases["busy"]
        trickler = asyncio.create_task(trickle(end_busy))
        await asyncio.sleep(phases["trickle"])
        marks["busy"] = time.time()
        # 12 in flight: Triton's instance never idles, and the edge (16 per replica) still admits the trickle
        await asyncio.gather(*(busy_loop(end_busy) for _ in range(BUSY_CONCURRENCY)))
        await trickler
        marks["idle_end"] = time.time()
        await asyncio.sleep(phases["idle_end"])
        marks["end"] = time.time()
    return counts


# ------------------------------------------------------------------------------------------------------------------
# the candidates, the HPA simulation, the verdicts
# ------------------------------------------------------------------------------------------------------------------
def rule(record: str) -> str:
    """The expression of the chart's recording rule `record` (the one definition), windows compressed: evaluated
    from the raw series at every replay step rather than read back from the recorded one."""
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for entry in group["rules"]:
            if entry.get("record") == record:
                return " ".join(entry["expr"].split()).replace("[1m", f"[{WINDOW}")
    raise SystemExit(f"{RULES} has no recording rule {record}")


def candidates(delays_us: dict[str, int]) -> list[Candidate]:
    """The signals compared; NVIDIA's keeps its sample target (50 us) and its 30 s window (10 s here)."""
    nvidia_window = f"{30 // SCALE}s"
    minus_delay = " or ".join(
        f'(rate(nv_inference_queue_duration_us{{model="{m}"}}[{WINDOW}])'
        f' - {d} * rate(nv_inference_request_success{{model="{m}"}}[{WINDOW}]))'
        for m, d in delays_us.items()
    )
    return [
        Candidate(
            "nvidia_sample",
            f"avg by (pod) (delta(nv_inference_queue_duration_us[{nvidia_window}]) / "
            f"(1 + delta(nv_inference_request_success[{nvidia_window}])))",
            per_load=False,
            target=50.0,
        ),
        Candidate("queue_us_per_request", rule("namespace_pod:attnserve_queue_us_per_request:rate1m"), per_load=False),
        Candidate(
            "queue_us_minus_delay",
            f"clamp_min(sum by (pod) ({minus_delay}) / clamp_min(sum by (pod) "
            f"(rate(nv_inference_request_success[{WINDOW}])), 1e-9), 0)",
            per_load=False,
        ),
        Candidate("pending_requests", rule("namespace_pod:attnserve_pending_requests:avg1m"), per_load=True),
        Candidate("busy_fraction", rule("namespace_pod:attnserve_busy_fraction:rate1m"), per_load=True),
    ]


HEADROOM = 0.6
"""Target = this fraction of the median saturated reading: a pod asks for help before it saturates."""


def choose_target(values: np.ndarray, phase: np.ndarray) -> float:
    """HEADROOM x the median reading of the saturated phase (one replica), 2 significant digits. Whether it clears
    the trickle is then up to the signal: verdict (a) says."""
    saturated = float(np.nanmedian(np.where(phase == "busy", values, np.nan)))
    if not saturated > 0:
        return math.inf
    target = HEADROOM * saturated
    return round(target, -int(math.floor(math.log10(target))) + 1)


def steadiness(values: np.ndarray, phase: np.ndarray) -> float:
    """Coefficient of variation of the saturated readings once the metric window has filled (lower: steadier).
    The target is a fixed fraction of their median, so a noisy signal crosses it both ways and the replicas flap."""
    saturated = values[phase == "busy"][4 * SCRAPE_S // HPA_PERIOD_S :]
    return float(np.nanstd(saturated) / max(float(np.nanmean(saturated)), 1e-12))


def best(report: dict[str, Any], names: list[str]) -> str | None:
    """Among the candidates that pass (a), (b) and (c), the steadiest under saturation; None when none passes all
    three. ((b) already bounds the scale-up delay; beyond it, a noisy signal flaps the replica count.)"""
    passing = [
        n
        for n in names
        if report[n]["a_no_scaling_on_trickle"]
        and report[n]["b_up_within_two_periods"]
        and report[n]["c_down_after_stabilisation"]
    ]
    return min(passing, key=lambda n: report[n]["saturated_cv"], default=None)


def simulate_hpa(values: list[float], target: float, per_load: bool) -> list[int]:
    """Replicas after each HPA period: a simulation of the documented algorithm (module docstring)."""
    current, replicas, history = MIN_REPLICAS, [], []  # history: (time, recommendation)
    for step, recorded in enumerate(values):
        now = step * HPA_PERIOD_S
        metric = 0.0 if math.isnan(recorded) else recorded / (current if per_load else 1)
        ratio = metric / target
        desired = current if abs(ratio - 1.0) <= TOLERANCE else math.ceil(current * ratio)
        desired = min(max(desired, MIN_REPLICAS), MAX_REPLICAS)
        history = [(t, r) for t, r in history if now - t < STABILISATION_S] + [(now, desired)]
        if desired < current:  # scale-down stabilisation: the highest recommendation of the window
            desired = max(r for _, r in history)
        elif desired > current:  # default scale-up policies: +4 pods or +100% per period, whichever is larger
            desired = min(desired, max(current + 4, 2 * current))
        current = desired
        replicas.append(current)
    return replicas


def verdicts(replicas: list[int], phase: np.ndarray) -> dict[str, Any]:
    """(a) one replica through the trickle, (b) >= 2 within two periods of the first saturated reading,
    (c) back to one replica once the idle phase has lasted the stabilisation window (plus the metric window)."""
    series = np.asarray(replicas)
    busy_steps = np.flatnonzero(phase == "busy")
    first_up = next((i for i in busy_steps if series[i] >= 2), None)
    idle = np.flatnonzero(phase == "idle_end")
    allowed_down = idle[0] + (STABILISATION_S + 2 * 4 * SCRAPE_S) // HPA_PERIOD_S
    down = next((i for i in idle if series[i] == 1), None)
    return {
        "trickle_max_replicas": int(series[phase == "trickle"].max()),
        "a_no_scaling_on_trickle": bool(series[phase == "trickle"].max() == 1),
        "periods_to_scale_up": None if first_up is None else int(first_up - busy_steps[0]),
        "b_up_within_two_periods": first_up is not None and first_up - busy_steps[0] <= 2,
        "busy_max_replicas": int(series[busy_steps].max()),
        "seconds_idle_to_one_replica_chart_scale": None if down is None else int((down - idle[0]) * 15),
        "c_down_after_stabilisation": down is not None and down <= allowed_down and series[-1] == 1,
    }


def _phases(marks: dict[str, float], steps: int) -> np.ndarray:
    """The load phase of each HPA period of the replay (by the recorded phase marks)."""
    names = ("idle_start", "trickle", "busy", "idle_end")
    phase = []
    for step in range(steps):
        now = marks["idle_start"] + step * HPA_PERIOD_S
        phase.append(next(n for n in reversed(names) if now >= marks[n]))
    return np.asarray(phase)


def _plot(path: Path, chosen: list[Candidate], replicas: dict[str, list[int]], phase: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(chosen), 1, figsize=(10, 2.2 * len(chosen)), sharex=True)
    seconds = np.arange(len(chosen[0].values)) * HPA_PERIOD_S * SCALE  # chart-scale seconds
    for axis, candidate in zip(axes, chosen, strict=True):
        ratio = np.asarray(candidate.values, dtype=float) / candidate.target
        axis.plot(seconds, ratio, color="tab:blue", label="metric / target (1 replica)")
        axis.axhline(1.0, color="tab:blue", linestyle=":", linewidth=0.8)
        twin = axis.twinx()
        twin.step(seconds, replicas[candidate.name], where="post", color="tab:red", label="replicas (simulated)")
        twin.set_ylim(0, MAX_REPLICAS + 0.5)
        axis.set_yscale("symlog", linthresh=0.1)
        axis.set_ylim(bottom=0)
        axis.set_title(f"{candidate.name} (target {candidate.target:g})", fontsize=9)
        for name in ("trickle", "busy", "idle_end"):
            axis.axvline(np.flatnonzero(phase == name)[0] * HPA_PERIOD_S * SCALE, color="grey", linewidth=0.6)
    axes[-1].set_xlabel("seconds at the chart's time scale (idle | trickle | one model saturated + trickle | idle)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _record(args: argparse.Namespace, scratch: Path) -> tuple[Prometheus, dict[str, float], dict[str, Any], Path]:
    from attnserve.serving.haproxy import EdgeSettings
    from attnserve.serving.replicas import ReplicaSet
    from attnserve.serving.server import free_port

    phases = {"idle_start": 25.0, "trickle": 60.0, "busy": 60.0, "idle_end": 150.0}
    if args.quick:
        phases = {"idle_start": 15.0, "trickle": 30.0, "busy": 30.0, "idle_end": 140.0}
    view = _export(scratch)
    edge = EdgeSettings(http_port=0, grpc_port=0, maxconn_per_replica=16, queue_timeout_ms=10)  # the chart's edge
    marks: dict[str, float] = {}
    with ReplicaSet(view, edge, replicas=1, models=list(MODELS), work_dir=scratch / "set") as replica_set:
        target = replica_set.servers[0].metrics_url.removeprefix("http://").removesuffix("/metrics")
        prometheus = Prometheus(target, scratch, free_port())
        counts = asyncio.run(_profile(replica_set.grpc_url, phases, marks))
    return prometheus, marks, counts, view


def _evaluate(chosen: list[Candidate], phase: np.ndarray, counts: dict[str, Any]) -> dict[str, Any]:
    """Targets, simulated replicas and verdicts of every candidate, and the one chosen."""
    report: dict[str, Any] = {"time_scale": SCALE, "scrape_s": SCRAPE_S, "window": WINDOW, "load": counts}
    for candidate in chosen:
        values = np.asarray(candidate.values, dtype=float)
        if candidate.target is None:
            candidate.target = choose_target(values, phase)
        replicas = simulate_hpa(candidate.values, candidate.target, candidate.per_load)
        trickle_max = float(np.nanmax(np.where(phase == "trickle", values, np.nan)))
        busy_median = float(np.nanmedian(np.where(phase == "busy", values, np.nan)))
        report[candidate.name] = {
            "promql": candidate.promql,
            "per_load": candidate.per_load,
            "target": candidate.target,
            "trickle_max": trickle_max,
            "busy_median": busy_median,
            "separation": busy_median / max(trickle_max, 1e-12),
            "saturated_cv": steadiness(values, phase),
            **verdicts(replicas, phase),
            "values": candidate.values,
            "replicas": replicas,
        }
    report["phase"] = phase.tolist()
    report["chosen"] = best(report, [c.name for c in chosen if c.name != "nvidia_sample"])
    return report


def _replayed(path: Path) -> tuple[list[Candidate], np.ndarray, dict[str, Any]]:
    """The candidates' recorded values from an earlier report (the selection and simulation run again)."""
    earlier = json.loads(path.read_text())
    names = [name for name, entry in earlier.items() if isinstance(entry, dict) and "promql" in entry]
    chosen = []
    for name in names:
        entry = earlier[name]
        target = 50.0 if name == "nvidia_sample" else None
        chosen.append(
            Candidate(
                name,
                entry["promql"],
                entry.get("per_load", name in ("busy_fraction", "pending_requests")),
                target,
                entry["values"],
            )
        )
    counts = {**earlier["load"], "replayed_from": str(path), "recorded_loadavg": earlier.get("loadavg")}
    return chosen, np.asarray(earlier["phase"]), counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter phases: a smoke run")
    parser.add_argument("--replay", type=Path, default=None, help="an earlier report: replay its recording only")
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        help="NAME=VALUE: a fixed target instead of the chosen one (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=BENCH_REPORTS_DIR / "hpa_replay.json")
    args = parser.parse_args(argv)
    fixed = {name: float(value) for name, value in (item.split("=", 1) for item in args.target)}
    if args.replay:
        chosen, phase, counts = _replayed(args.replay)
    else:
        with tempfile.TemporaryDirectory(prefix="attnserve-hpa-replay-") as folder:
            prometheus, marks, counts, view = _record(args, Path(folder))
            try:
                chosen = candidates(_queue_delays_us(view))
                for candidate in chosen:
                    candidate.values = prometheus.range_query(candidate.promql, marks["idle_start"], marks["end"])
            finally:
                prometheus.stop()
        phase = _phases(marks, len(chosen[0].values))
    for candidate in chosen:
        candidate.target = fixed.get(candidate.name, candidate.target)
    report = _evaluate(chosen, phase, counts)
    report["loadavg"] = os.getloadavg()
    _print(chosen, report, phase)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float))
    _plot(args.out.with_suffix(".png"), chosen, {c.name: report[c.name]["replicas"] for c in chosen}, phase)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def _print(chosen: list[Candidate], report: dict[str, Any], phase: np.ndarray) -> None:
    """Replicas per HPA period side by side (one character per period), then each candidate's verdicts."""
    marks = "".join({"idle_start": ".", "trickle": "t", "busy": "B", "idle_end": "."}[p] for p in phase)
    print(f"{'phase':>22s} {marks}")
    for candidate in chosen:
        print(f"{candidate.name:>22s} {''.join(str(r) for r in report[candidate.name]['replicas'])}")
    print(f"load: {report['load']}; load average {report['loadavg'][0]:.2f} on {os.cpu_count()} cores (shared)")
    for candidate in chosen:
        entry = report[candidate.name]
        print(
            f"{candidate.name:>22s}: target {entry['target']:g}, trickle max {entry['trickle_max']:.4g}, saturated "
            f"median {entry['busy_median']:.4g}; (a) {entry['a_no_scaling_on_trickle']} (b) "
            f"{entry['b_up_within_two_periods']} ({entry['periods_to_scale_up']} periods) (c) "
            f"{entry['c_down_after_stabilisation']}; saturated / trickle {entry['separation']:.3g}, saturated "
            f"variation {entry['saturated_cv']:.2f}"
        )
    print(f"chosen: {report['chosen']} (passes a, b and c; the steadiest when saturated)")


if __name__ == "__main__":
    raise SystemExit(main())
