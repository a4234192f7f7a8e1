"""The console script: every stage is a subcommand with help, and the client side never imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from attnserve.cli import build_parser, main


def test_help_lists_every_stage() -> None:
    help_text = build_parser().format_help()
    for command in ("models", "train", "export", "serve", "infer", "loadtest", "demo"):
        assert command in help_text, f"`attnserve {command}` missing from --help"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_client_commands_do_not_import_torch() -> None:
    # The client side must install and run without torch: importing the CLI (which registers every
    # subcommand) and the client package may not pull it in.
    code = (
        "import sys, attnserve.cli, attnserve.clients.client, attnserve.clients.loadtest; "
        "attnserve.cli.build_parser(); "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"torch was imported by the client side: {result.stderr}"
