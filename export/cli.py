"""`attnserve export NAME...` (and, from the CPU fast path, `attnserve cpu-variants`).

Heavy imports (torch, onnx) happen inside `run_export`, so `attnserve --help` stays fast.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from attnserve.defaults import REPOSITORY_DIR, RUNS_DIR

_STATUS_STYLE = {"ok": "green", "skipped": "yellow", "failed": "red"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand (and `optimize`, owned by `export/optimize_cli.py`)."""
    parser = subparsers.add_parser(
        "export",
        help="export deployables to verified ONNX (+ explain, fp16, TensorRT) and write Triton repository entries",
        description=(
            "For each NAME (a deployable, using runs/NAME when trained, or a run folder): torch -> ONNX "
            "(dynamo, TorchScript fallback), verification against PyTorch at batch 1, 2 and max, ONNX Runtime "
            "optimisation (kept only when faster and equal), the NAME_explain model, the fp16 ONNX for TensorRT "
            "and, with --tensorrt, the engine (skipped with the reason without TensorRT and a GPU). Writes "
            "REPOSITORY/NAME{,_explain,_trt}/ and runs/NAME/export/export_report.json."
        ),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="deployable names or run folders")
    parser.add_argument(
        "--hf",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a local Hugging Face save_pretrained folder or config.json (offline); repeatable",
    )
    parser.add_argument("--hf-name", default=None, help="deployable name for a single --hf model (default hf_<folder>)")
    parser.add_argument(
        "--opset",
        type=int,
        choices=(18, 23),
        default=None,
        help="23: fused ONNX Attention; 18: MatMul/Softmax for older runtimes (default: the spec's opset, 23 "
        "unless the run's spec.json says otherwise)",
    )
    parser.add_argument("--tensorrt", action="store_true", help="also build a TensorRT engine (GPU hosts)")
    parser.add_argument("--no-explain", action="store_true", help="skip the NAME_explain model")
    parser.add_argument("--no-optimize", action="store_true", help="skip ONNX Runtime's offline optimisation")
    parser.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="produce and verify the fp16 ONNX (default: with --tensorrt or when the spec lists fp16)",
    )
    parser.add_argument("--repository", type=Path, default=REPOSITORY_DIR, help="Triton model repository")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="parent of run folders (default: runs)")
    parser.add_argument("--version", type=int, default=None, help="repository version folder (default: next free)")
    parser.add_argument(
        "--untrained",
        action="store_true",
        help="export random weights when a trainable NAME has no checkpoint in --runs-dir (refused otherwise); "
        "the served entry is marked untrained",
    )
    parser.set_defaults(func=run_export)
    try:
        from attnserve.export import cpu_choice_cli
    except ModuleNotFoundError:  # the fast-path package is optional
        return
    cpu_choice_cli.register(subparsers)


def check_names(names: list[str], runs_dir: Path, untrained: bool) -> None:
    """Refuse unknown names, and trainable deployables without a checkpoint (unless `untrained`), up front.

    Raises:
        UnknownModelError: A name that is neither a run folder nor a deployable.
        MissingCheckpointError: A trainable deployable without `runs_dir/NAME/` and not `untrained`.
    """
    from attnserve.catalogue import DEPLOYABLE_NAMES, TRAINABLE_NAMES
    from attnserve.errors import UnknownModelError
    from attnserve.models.checkpoint import has_checkpoint, missing_checkpoint

    for name in names:
        if (Path(name).is_dir() and has_checkpoint(Path(name))) or has_checkpoint(Path(runs_dir) / name):
            continue
        if name not in DEPLOYABLE_NAMES:
            raise UnknownModelError(name, DEPLOYABLE_NAMES)
        if name in TRAINABLE_NAMES and not untrained and not has_checkpoint(Path(runs_dir) / name):
            raise missing_checkpoint(name, Path(runs_dir) / name)


def run_export(args: argparse.Namespace) -> int:
    """Export every NAME and --hf PATH; print one line per stage; exit 1 when any stage failed."""

    from attnserve.console import make_console, status
    from attnserve.errors import UserInputError
    from attnserve.export.pipeline import ExportOptions, export_hf, export_model
    from attnserve.export.stages import StageResult

    console = make_console()
    if not args.names and not args.hf:
        raise UserInputError("give at least one deployable NAME or --hf PATH")
    if args.hf_name and len(args.hf) != 1:
        raise UserInputError(f"--hf-name names a single --hf model, got {len(args.hf)} --hf paths")
    check_names(args.names, args.runs_dir, args.untrained)  # before any work: no half-done batch
    if args.hf_name is not None and not re.fullmatch(r"[a-z][a-z0-9_]*", args.hf_name):
        suggestion = re.sub(r"[^a-z0-9_]+", "_", args.hf_name.lower()).strip("_")
        raise UserInputError(
            f"--hf-name must be lowercase letters, digits and _ starting with a letter (it is the Triton model "
            f"name), got {args.hf_name!r}; try {suggestion!r}"
        )

    def show(stage: StageResult) -> None:
        style = _STATUS_STYLE[stage.status]
        detail = stage.reason or stage.summary
        console.print(
            f"  [{style}]{stage.status:>7}[/{style}] {stage.stage:<13} {stage.seconds:6.1f}s  {detail}",
            highlight=False,
            soft_wrap=True,
        )

    options = ExportOptions(
        opset=args.opset,
        explain=not args.no_explain,
        optimize=not args.no_optimize,
        fp16=args.fp16,
        tensorrt=args.tensorrt,
        version=args.version,
    )
    where = dict(repository=args.repository, runs_dir=args.runs_dir, on_stage=show)
    all_ok = True
    jobs = [
        (str(name), lambda n=name: export_model(n, untrained=args.untrained, options=options, **where))
        for name in args.names
    ]
    jobs += [(str(path), lambda p=path: export_hf(p, name=args.hf_name, options=options, **where)) for path in args.hf]
    for label, job in jobs:
        console.print(f"[bold]export {label}[/bold]")
        with status(console, f"exporting {label} ..."):
            report = job()
        all_ok = all_ok and report.ok
        entries = ", ".join(str(path) for path in report.entries.values())
        console.print(f"  -> {entries}  (report: {report.work_dir / 'export_report.json'})", highlight=False)
        if not report.spec.trained:
            console.print(f"  note: {report.spec.name} has UNTRAINED (random) weights; its entry says trained=false")
    return 0 if all_ok else 1
