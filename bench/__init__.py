"""Benchmarks: each script prints ratios measured in one run and writes JSON under reports/bench/."""
