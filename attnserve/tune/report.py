"""What `attnserve tune` writes: a JSON report, a CSV (one row per candidate and level), a PNG of throughput
against p99 for every candidate (Pareto front marked, SLO line drawn), and the summary table it prints."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from attnserve.tune.search import CandidateResult, LevelFigures, rank_key


class TuneReport(BaseModel):
    """A whole tune run."""

    model: str
    mode: str
    traffic: str
    """`concurrency` or `rate`."""
    levels: list[float]
    slo_p99_ms: float
    budget_s: float
    seconds: float
    server: str
    """`embedded` or the URL of the server tuned on."""
    load_average: list[float] = Field(default_factory=list)
    candidates: list[CandidateResult] = Field(default_factory=list)
    winner: str | None = None
    """Name of the best candidate that meets the SLO at every level (None: none did)."""
    closest: str | None = None
    """When none met the SLO: the candidate with the smallest worst p99."""
    applied: bool = False
    applied_to: list[str] = Field(default_factory=list)
    """Files the winner was written to (repository entry config and spec, the run's spec)."""
    unchanged: bool = False
    """The winner is the configuration the entry served already: nothing was written."""
    machine: dict[str, Any] = Field(default_factory=dict)
    verification: list[LevelFigures] = Field(default_factory=list)
    """With `--verify`: the applied winner measured again on a freshly started server (after the budget)."""
    verification_meets_slo: bool | None = None

    def ranked(self) -> list[CandidateResult]:
        return sorted(self.candidates, key=rank_key)

    def write_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    def write_csv(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = ["index", "candidate", "status", "level", "throughput", "p50_ms", "p99_ms", "errors"]
        columns += ["avg_batch", "queue_us", "compute_infer_us", "counts_agree", "meets_slo", "score", "measurements"]
        columns += ["reason"]
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for result in self.candidates:
                rows: list[LevelFigures | None] = list(result.levels) or [None]
                for figures in rows:
                    level_values = (
                        [figures.level, round(figures.throughput, 1), round(figures.p50_ms, 3)]
                        + [round(figures.p99_ms, 3), figures.errors, round(figures.avg_batch, 2)]
                        + [round(figures.queue_us, 1), round(figures.compute_infer_us, 1), figures.counts_agree]
                        if figures is not None
                        else [""] * 9
                    )
                    writer.writerow(
                        [result.index, result.name, result.status, *level_values]
                        + [result.meets_slo, round(result.score, 1), result.measurements, result.reason]
                    )
        return path

    def write_plot(self, path: Path) -> Path:
        """Throughput (x) against p99 (y), one point per candidate and level; Pareto front per level marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(8, 5.5))
        markers = "osD^v<>"
        for position, level in enumerate(self.levels):
            points = [(r, f) for r in self.candidates if r.status == "ok" and (f := r.figures(level)) is not None]
            xs = [f.throughput for _, f in points]
            ys = [f.p99_ms for _, f in points]
            label = f"c={level:g}" if self.traffic == "concurrency" else f"{level:g}/s"
            scatter = axis.scatter(xs, ys, marker=markers[position % len(markers)], alpha=0.45, label=label)
            front = pareto_front(list(zip(xs, ys)))
            if front:
                axis.plot(*zip(*front), color=scatter.get_facecolor()[0], alpha=0.9, lw=1.5, marker="*", ms=11)
            winner = [f for r, f in points if r.name == self.winner]
            if winner:
                axis.scatter([winner[0].throughput], [winner[0].p99_ms], s=160, facecolors="none", edgecolors="k")
        axis.axhline(self.slo_p99_ms, color="red", ls="--", lw=1, label=f"SLO p99 {self.slo_p99_ms:g} ms")
        axis.set_xlabel("throughput (inferences/s)")
        axis.set_ylabel("p99 latency (ms)")
        axis.set_yscale("log")
        title = f"attnserve tune {self.model}: {len(self.candidates)} candidates; lines and stars = Pareto front"
        axis.set_title(title + ("; circled = winner" if self.winner else "; no candidate met the SLO"), fontsize=9)
        axis.legend(fontsize=8)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path

    def table(self, limit: int = 15) -> str:
        """The summary table, best first (throughput and p99 per level)."""
        unit = "c" if self.traffic == "concurrency" else "r"
        header = f"{'#':>3} {'candidate':<58} " + " ".join(
            f"{unit + '=' + format(level, 'g') + ' req/s':>11} {'p99':>7}" for level in self.levels
        )
        lines = [header + f" {'score':>9}  SLO (xN: measured N times, mean throughput, worst p99)"]
        for result in self.ranked()[:limit]:
            cells = []
            for level in self.levels:
                figures = result.figures(level)
                cells.append(
                    f"{figures.throughput:>11,.0f} {figures.p99_ms:>7.2f}" if figures else f"{'-':>11} {'-':>7}"
                )
            verdict = (
                "ok" if result.meets_slo else ("FAILED: " + result.reason[:60] if result.status != "ok" else "miss")
            )
            verdict += f" (x{result.measurements})" if result.measurements > 1 else ""
            score = f"{result.score:>9,.0f}" if result.status == "ok" else f"{'-':>9}"
            lines.append(f"{result.index:>3} {result.name:<58} " + " ".join(cells) + f" {score}  {verdict}")
        if len(self.candidates) > limit:
            lines.append(f"    ... {len(self.candidates) - limit} more in the CSV")
        lines.append(
            "score: throughput averaged over the levels (geometric mean); the best score among candidates meeting "
            "the SLO wins. xN: measured N times (the leaders are measured again)"
        )
        return "\n".join(lines)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both throughput (higher) and p99 (lower), by throughput."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (-p[0], p[1])):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return sorted(front)
