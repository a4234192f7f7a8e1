"""Benchmarks: each script prints ratios measured in one run and writes JSON under reports/bench/."""

from attnserve.defaults import REPORTS_DIR

BENCH_REPORTS_DIR = REPORTS_DIR / "bench"
"""Where every benchmark writes its JSON by default."""
