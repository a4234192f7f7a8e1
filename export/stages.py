"""One stage engine for the export and the CPU-variant choice.

A `Stage` has a name, a reason to skip it (decided before it runs), a function returning a typed result,
and optionally a check that turns a result into a failure (a parity report that is not ok). `StageRunner.run`
times it and records a `StageResult`: `ok`, `skipped` with the reason, or `failed` with the exception type,
its message, where it was raised (`origin`) and a logged traceback. The typed result itself lives in the caller's report; the stage record
keeps a one-line summary of it for people (the CLI prints it).
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)

StageStatus = Literal["ok", "skipped", "failed"]


class ExportStage(str, Enum):
    """The stages of `attnserve export`, by the names their `StageResult`s carry (reports, the demo)."""

    ONNX = "onnx"
    VERIFY = "verify"
    ORT_OPTIMIZE = "ort_optimize"
    EXPLAIN = "explain"
    FP16 = "fp16"
    ONNX2TRT = "onnx2trt"
    REPOSITORY = "repository"

    def __str__(self) -> str:  # f-strings and reports show the plain name
        return str(self.value)


T = TypeVar("T")


class ArtefactReport(BaseModel):
    """Base of the JSON reports written beside the artefacts."""

    model_config = ConfigDict(extra="forbid")

    def write_json(self, path: Path) -> Path:
        """Write the report as indented JSON (creating the folder) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


class StageResult(ArtefactReport):
    """One stage: what ran, whether it worked, why not (with the exception type), how long it took."""

    stage: str
    status: StageStatus
    reason: str | None = None
    """Why the stage was skipped or failed."""
    error_type: str | None = None
    """The exception's type when the stage failed by raising (the traceback is in the log)."""
    origin: str | None = None
    """Where that exception was raised: the innermost frame, and the last attnserve frame on the way when it
    differs (`error_origin`); the full traceback is in the log."""
    seconds: float = 0.0
    summary: str = ""
    """One line about the stage's typed result, for people (the CLI prints it)."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _no_failure(result: object) -> str | None:
    return None


def _no_summary(result: object) -> str:
    return ""


@dataclass(frozen=True)
class Stage(Generic[T]):
    """A unit of work of a pipeline.

    Attributes:
        name: the stage's name in reports.
        run: does the work and returns its typed result.
        skip: a reason not to run it (None: run it).
        failure: the reason a returned result is a failure (None: it is not); e.g. parity not ok.
        summary: one line about a result, for people.
        required: a raised failure is re-raised after it is recorded (later stages need this one).
        log_level: level of the log line (with traceback) of a raised failure; INFO for expected ones
            (an exporter attempt that has a fallback).
    """

    name: str
    run: Callable[[], T]
    skip: str | None = None
    failure: Callable[[T], str | None] = _no_failure
    summary: Callable[[T], str] = _no_summary
    required: bool = False
    log_level: int = logging.WARNING


class StageRunner:
    """Runs stages one after another, records each `StageResult`, and reports it to `on_stage`."""

    def __init__(self, on_stage: Callable[[StageResult], None] | None = None) -> None:
        self.results: list[StageResult] = []
        self.on_stage = on_stage

    def record(self, result: StageResult) -> StageResult:
        """Add a finished stage's record (also for records built elsewhere) and tell `on_stage`."""
        self.results.append(result)
        if self.on_stage is not None:
            self.on_stage(result)
        return result

    def skip(self, name: str, reason: str) -> StageResult:
        """Record `name` as skipped with `reason`."""
        return self.record(StageResult(stage=name, status="skipped", reason=reason))

    def run(self, stage: Stage[T]) -> T | None:
        """Run `stage` unless it is skipped; returns its result (None when skipped or when it raised).

        A failure that raised is logged with its traceback and recorded with the exception type; it
        propagates only when the stage is `required`. `last.ok` says whether the stage succeeded.
        """
        if stage.skip is not None:
            self.skip(stage.name, stage.skip)
            return None
        started = time.perf_counter()
        try:
            result = stage.run()
        except Exception as exc:
            seconds = time.perf_counter() - started
            logger.log(stage.log_level, "stage %s failed: %s", stage.name, short_error(exc), exc_info=True)
            self.record(
                StageResult(
                    stage=stage.name,
                    status="failed",
                    reason=short_error(exc),
                    error_type=type(exc).__name__,
                    origin=error_origin(exc),
                    seconds=seconds,
                )
            )
            if stage.required:
                raise
            return None
        failure = stage.failure(result)
        self.record(
            StageResult(
                stage=stage.name,
                status="ok" if failure is None else "failed",
                reason=failure,
                seconds=time.perf_counter() - started,
                summary=stage.summary(result),
            )
        )
        return result

    @property
    def last(self) -> StageResult:
        """The most recent record."""
        return self.results[-1]

    def succeeded(self, name: str) -> bool:
        """Whether the stage called `name` ran and was ok."""
        return any(result.stage == name and result.ok for result in self.results)


_PACKAGE_DIRS = ("attnserve", "models", "export", "serving", "clients")


_SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""The folder holding the package's source folders (`export/` is one)."""


def _is_ours(frame: traceback.FrameSummary) -> bool:
    path = Path(frame.filename).resolve()
    if path == Path(__file__).resolve():  # the runner's own frame says nothing about the failure
        return False
    return path.is_relative_to(_SOURCE_ROOT) and path.relative_to(_SOURCE_ROOT).parts[0] in _PACKAGE_DIRS


def _frame_text(frame: traceback.FrameSummary) -> str:
    parts = Path(frame.filename).parts
    return f"{'/'.join(parts[-2:])}:{frame.lineno} in {frame.name}"


def error_origin(exc: BaseException) -> str | None:
    """`folder/file.py:LINE in function` of the frame that raised `exc`, followed by `(via ...)` the last frame
    of the package's own code on the way when the exception came from a library (None without a traceback)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None
    ours = [frame for frame in frames if _is_ours(frame)]
    origin = _frame_text(frames[-1])
    if ours and ours[-1] is not frames[-1]:
        origin += f" (via {_frame_text(ours[-1])})"
    return origin


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def short_error(exc: BaseException, limit: int = 800) -> str:
    """`Type: message` without colour codes, cut to `limit` characters for reports (the log has it all).

    The dynamo exporter's errors start with generic advice and put the cause under "## Exception summary";
    that cause is kept after the first line.
    """
    message = _ANSI_ESCAPE.sub("", str(exc)).strip()
    if "## Exception summary" in message:
        headline = message.splitlines()[0]
        cause = message.split("## Exception summary", 1)[1].strip()
        message = f"{headline} Cause: {cause}"
    text = f"{type(exc).__name__}: {message}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
