"""The chart's recording rules (the one definition of every PromQL expression the HPA's adapter and the dashboard
read), checked and unit-tested by promtool (Debian package `prometheus`) on synthetic Triton counters: a trickle on
the video model, one busy model among seven, a saturated pod. NVIDIA's sample query is evaluated on the same series.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from support.binaries import require_binary

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "kubernetes" / "attnserve" / "files" / "recording_rules.yaml"
VALUES = ROOT / "deploy" / "kubernetes" / "attnserve" / "values.yaml"
PROMQL = Path(__file__).parent / "promql"
HPA_SERIES = "namespace_pod:attnserve_busy_fraction:rate1m"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool", "prometheus"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=PROMQL,
    )


def _chart_target() -> float:
    quantity = str(yaml.safe_load(VALUES.read_text())["autoscaling"]["targetAverageValue"])
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_recording_rules_pass_promtool_check() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_trickle_one_busy_model_and_saturation() -> None:
    """The chosen signal reads below the chart's target on the trickle and above it with one busy model of seven and
    when saturated; NVIDIA's query reads above its 50 us target on the trickle and below it with one busy model."""
    tests = yaml.safe_load((PROMQL / "recording_rules_test.yaml").read_text())
    thresholds = {
        float(match.group(2))
        for case in tests["tests"][0]["promql_expr_test"]
        if (match := re.fullmatch(rf"{HPA_SERIES} ([<>]) ([0-9.]+)", case["expr"]))
    }
    assert thresholds == {_chart_target()}, (
        f"the unit tests compare with {thresholds}, the chart targets {_chart_target()}"
    )
    adapter = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "prometheus-adapter-values.yaml").read_text())
    assert adapter["rules"]["custom"][0]["name"]["matches"] == HPA_SERIES
    result = _run("test", "rules", "recording_rules_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_nvidia_query_fails_the_one_busy_model_case() -> None:
    """What an autoscaler needs (one saturated model of seven reads above target) fails for NVIDIA's query: 42.8 us
    against its 50 us target, so promtool reports the one-busy pod missing from the pods above target. The same
    check on the chart's signal passes (previous test)."""
    result = _run("test", "rules", "nvidia_sample_expected_test.yaml")
    assert result.returncode != 0, result.stdout
    output = result.stdout + result.stderr
    got = next(line for line in output.splitlines() if line.strip().startswith("got:"))
    assert 'pod="trickle"' in got and 'pod="saturated"' in got and 'pod="onebusy"' not in got, output
