"""Default locations and ports, in one place: every command's default and every library default reads them.

Folders are relative to the working folder, so the commands work the same from a checkout or an installed
package. Ports are Triton's own defaults (HTTP 8000, gRPC 8001, metrics 8002), bound to 127.0.0.1 unless told.
"""

from __future__ import annotations

from pathlib import Path

REPOSITORY_DIR = Path("model_repository")
"""The Triton model repository the export writes and `serve` serves."""
RUNS_DIR = Path("runs")
"""Training runs: `runs/NAME/{model.safetensors, spec.json, metrics.json}`."""
REPORTS_DIR = Path("reports")
"""Reports, plots and benchmark JSON."""

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
