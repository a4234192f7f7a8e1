"""The `attnserve` console script: one subcommand per stage.

Each package owns its subcommands in its own `cli.py`, which exposes
`register(subparsers: argparse._SubParsersAction) -> None`. A subcommand sets `func` (a callable taking the
parsed namespace and returning an exit code). Heavy imports (torch, onnx, tritonclient) happen inside
those functions, so `attnserve --help` stays fast and `infer`/`loadtest` never import torch.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from attnserve import __version__, demo
from attnserve.clients import cli as clients_cli
from attnserve.errors import AttnserveError
from attnserve.export import cli as export_cli
from attnserve.models import cli as models_cli
from attnserve.serving import cli as serving_cli
from attnserve.serving import replicas_cli
from attnserve.tune import cli as tune_cli

# Package CLI modules, in the order their commands appear in `--help`. Each imports only argparse-level code at
# module level (the heavy libraries load inside the command functions), so importing them all keeps --help fast.
_COMMAND_MODULES = (
    models_cli,  # models, train
    export_cli,  # export, cpu-variants
    serving_cli,  # serve, pipelines, load
    replicas_cli,  # replicas
    clients_cli,  # infer, loadtest
    tune_cli,  # tune
    demo,  # demo
)


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, unless the help already names it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default in (None, False, argparse.SUPPRESS)
            or action.option_strings == []
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            return text
        shown = ",".join(str(item) for item in default) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


def installed_version() -> str:
    """The version pip installed (the distribution's metadata), else the source tree's `__version__`."""
    try:
        return importlib.metadata.version("attnserve")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return __version__


class _VersionAction(argparse.Action):
    """`--version` on one line (argparse's own action wraps long paths at the terminal's width)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: object, values: object, option: object = None
    ) -> None:
        print(f"attnserve {installed_version()} ({Path(__file__).resolve().parent})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnserve",
        description=(
            "Attention vision models from PyTorch to a real Triton server: train -> export (verified ONNX, "
            "TensorRT) -> serve (embedded Triton on CPU) -> infer -> loadtest."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the installed version and where the package was imported from, then exit",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.register(subparsers)
    for subparser in subparsers.choices.values():  # one rule for every subcommand: defaults shown
        subparser.formatter_class = HelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # gRPC's C core logs a failed TLS handshake on stderr beside the one-line error that names it
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # read when grpc is first imported, inside the commands
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AttnserveError as exc:
        print(f"attnserve {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"attnserve {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
