"""A short soak (`python -m bench.soak --minutes 1`): a mixed open-loop load on `attnserve serve` loses no request
and records the memory of every process. Timing is not asserted here; the bench's own limits (p99 drift, memory
growth) apply to runs of 10 minutes and more, reported in docs/installing.md#long-runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_one_minute_of_mixed_load_loses_nothing_and_records_every_process(triton_server, tmp_path: Path) -> None:
    from attnserve.repository.config import read_config

    repository = tmp_path / "model_repository"
    shutil.copytree(triton_server.repository, repository, ignore=shutil.ignore_patterns(".attnserve-*"))
    image = next(name for name, spec in triton_server.specs.items() if spec.kind == "image")
    video = next(name for name, spec in triton_server.specs.items() if spec.kind == "video")
    out = tmp_path / "soak.json"
    command = [sys.executable, "-m", "bench.soak", "--minutes", "1", "--interval-s", "15", "--probe-s", "5"]
    command += ["--repository", str(repository), "--image-model", image, "--video-model", video, "--out", str(out)]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["verdict"]["failed_requests"] == 0 and report["verdict"]["ok"]
    rows = report["rows"]
    assert len(rows) >= 4 and all(row["requests"] > 0 for row in rows)
    entries = [entry for entry in repository.iterdir() if (entry / "config.pbtxt").is_file()]
    expected = {entry.name for entry in entries if read_config(entry).platform != "ensemble"}  # one stub each
    for row in rows:
        stubs = {name.split(":", 1)[1].split("[")[0] for name in row["rss_mib"] if name.startswith("stub:")}
        assert stubs == expected, row["rss_mib"]
        assert any(name.startswith("tritonserver") for name in row["rss_mib"])
        assert all(mib > 0 for mib in row["rss_mib"].values())
