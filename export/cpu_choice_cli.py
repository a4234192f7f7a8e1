"""`attnserve cpu-variants NAME`: the CPU fast path (runtime x precision picked behind an accuracy gate).

Registered by `attnserve.export.cli`; heavy imports happen inside `run_cpu_variants`. `attnserve optimize`
is the command's former name, kept as an alias ("optimize" now means only ONNX Runtime's graph optimisation).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attnserve.defaults import REPORTS_DIR, REPOSITORY_DIR, RUNS_DIR


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `cpu-variants` subcommand (alias `optimize`)."""
    parser = subparsers.add_parser(
        "cpu-variants",
        aliases=["optimize"],
        help="build CPU variants (bf16, int8, OpenVINO), measure them, serve the fastest within the accuracy gate",
        description=(
            "Export and verify the fp32 ONNX of NAME, build its CPU variants (ONNX Runtime int8 dynamic and "
            "static Q/DQ, OpenVINO fp32/bf16/int8), check parity and held-out accuracy against fp32, time them "
            "in-process (batch 1 and the largest preferred batch), pick the fastest within the gate and make "
            "the repository entry serve it. The table goes to RUNS_DIR/NAME/cpu_variants/ and REPORTS_DIR."
        ),
    )
    parser.add_argument("name", help="deployable name (uses runs/NAME when trained) or a run folder")
    parser.add_argument("--repository", type=Path, default=REPOSITORY_DIR, help="model repository to update")
    parser.add_argument("--no-serve", action="store_true", help="only build and measure; leave the repository alone")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="parent of run folders (default: runs)")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR / "cpu_variants", help="where NAME.json/.md go")
    parser.add_argument(
        "--budget-points",
        type=float,
        default=None,
        help="trained models: top-1 points a variant may lose against fp32 (default: the spec's, 0.5)",
    )
    parser.add_argument("--eval-samples", type=int, default=None, help="held-out samples (default: the whole split)")
    parser.add_argument("--calibration-samples", type=int, default=128, help="training samples for int8 calibration")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (median kept)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="least seconds per throughput measurement")
    parser.set_defaults(func=run_cpu_variants)


def run_cpu_variants(args: argparse.Namespace) -> int:
    """Run `cpu-variants` and print the table and the pick."""
    from attnserve.errors import UserInputError
    from attnserve.export.cpu_choice import ChoiceSettings, choose_for_deployable, render_markdown

    if args.budget_points is not None and args.budget_points < 0:
        raise UserInputError(f"--budget-points must be >= 0, got {args.budget_points}")
    report = choose_for_deployable(
        args.name,
        runs_dir=args.runs_dir,
        repository=None if args.no_serve else args.repository,
        reports_dir=args.reports_dir,
        settings=ChoiceSettings(budget_points=args.budget_points, repeats=args.repeats, min_seconds=args.min_seconds),
        eval_samples=args.eval_samples,
        calibration_samples=args.calibration_samples,
    )
    print(render_markdown(report))
    where = "left alone (--no-serve)" if args.no_serve else f"{args.repository / report.model} now serves it"
    print(f"picked {report.picked} ({report.picked_runtime}, {report.picked_precision}); {where}")
    print(f"table: {Path(report.variants_dir) / 'cpu_variants.json'}, {args.reports_dir / (report.model + '.json')}")
    return 0
