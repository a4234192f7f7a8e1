"""The stage engine keeps what a failed optional stage raised: type, message and where it was raised."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from attnserve.export.stages import Stage, StageRunner
from attnserve.spec import ModelSpec


def test_a_failed_optional_stage_records_type_origin_and_logs_the_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "spec.json").write_text("{not json")
    runner = StageRunner()
    with caplog.at_level(logging.WARNING, logger="attnserve.export.stages"):
        assert runner.run(Stage("read_spec", lambda: ModelSpec.load(tmp_path))) is None  # not required: no raise
    failed = runner.last
    assert failed.status == "failed" and failed.error_type == "JSONDecodeError"
    assert failed.reason is not None and failed.reason.startswith("JSONDecodeError: Expecting property name")
    # raised inside the json library, reached through the package's own ModelSpec.load
    assert failed.origin is not None and failed.origin.startswith("json/decoder.py:")
    assert failed.origin.endswith("in load)") and "(via attnserve/spec.py:" in failed.origin
    assert "Traceback (most recent call last)" in caplog.text and "read_spec" in caplog.text


def test_a_required_stage_is_recorded_then_raised() -> None:
    runner = StageRunner()

    def broken() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        runner.run(Stage("needed", broken, required=True))
    assert runner.last.error_type == "ValueError" and runner.last.origin is not None
    assert "in broken" in runner.last.origin
