"""What a load test runs: `LoadTestOptions`, one typed model for `run_loadtest` and `attnserve loadtest`.

options = LoadTestOptions(concurrency=[1, 2, 4], window_s=1.0)
report = run_loadtest(ClientSettings(url="127.0.0.1:8001"), "vit_digits", options)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from attnserve.clients.loadtest_report import LoadMode
from attnserve.errors import UserInputError


class LoadTestOptions(BaseModel):
    """The levels to run and how each is measured (see `attnserve.clients.loadtest` for the method).

    Exactly one of `concurrency` (closed loop) and `rates` (open loop) is given. A bad combination raises
    `UserInputError` when the options are built, before any load; a wrong type or an unknown field raises
    pydantic's `ValidationError`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: list[int] | None = None
    """Closed loop: requests kept in flight, one level each."""
    rates: list[float] | None = None
    """Open loop: requests per second, one level each."""
    poisson: bool = False
    """Open loop: exponential gaps between requests instead of even ones."""
    batch_size: int = 1
    workers: int = 1
    """Processes sending load (spawned when > 1); they split each level's concurrency or rate."""
    warmup_s: float = 1.0
    window_s: float = 2.0
    stability_pct: float = 10.0
    """A level is stable when the last `min_windows` windows' throughput and mean latency agree within this."""
    min_windows: int = 3
    max_windows: int = 6
    slo_p99_ms: float | None = None
    """Stop at the first level whose p99 exceeds it (or that has errors); rates are then bisected."""
    slo_refine_steps: int = 2
    input_file: Path | None = None
    """Payload of BYTES inputs (an encoded image or video)."""
    max_outstanding: int = 8192
    """Open loop: requests in flight beyond this are counted as `client_overload` instead of sent."""

    @model_validator(mode="after")
    def _check(self) -> LoadTestOptions:
        # UserInputError is not a ValueError: pydantic lets it through unwrapped, as the caller's mistake.
        if (self.concurrency is None) == (self.rates is None):
            raise UserInputError("give exactly one of concurrency (closed loop) or rates (open loop)")
        levels = self.levels
        if not levels or min(levels) <= 0:
            raise UserInputError(f"levels must be positive numbers, got {levels}")
        if self.workers < 1 or self.min_windows < 1 or self.max_windows < self.min_windows:
            raise UserInputError(
                f"expected workers >= 1 and 1 <= min_windows <= max_windows; got workers={self.workers}, "
                f"min_windows={self.min_windows}, max_windows={self.max_windows}"
            )
        if self.window_s <= 0 or self.warmup_s < 0 or self.max_outstanding < 1:
            raise UserInputError(
                f"expected window_s > 0, warmup_s >= 0, max_outstanding >= 1; got window_s={self.window_s}, "
                f"warmup_s={self.warmup_s}, max_outstanding={self.max_outstanding}"
            )
        return self

    @property
    def mode(self) -> LoadMode:
        """`concurrency` (closed loop) or `rate` (open loop)."""
        return "concurrency" if self.concurrency is not None else "rate"

    @property
    def levels(self) -> list[float]:
        """The levels of the mode, sorted."""
        values = self.concurrency if self.concurrency is not None else self.rates
        return sorted(float(value) for value in values or [])
