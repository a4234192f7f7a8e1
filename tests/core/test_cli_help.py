"""Every subcommand's `--help` runs, describes the command, and gives every option a help text (and its default)."""

from __future__ import annotations

import argparse

import pytest

from attnserve.cli import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


SUBCOMMANDS = sorted(_subcommands())


def test_the_subcommands_are_found() -> None:
    assert {"models", "train", "export", "serve", "pipelines", "load", "infer", "loadtest", "demo"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_runs_and_every_option_is_explained(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    subparser = _subcommands()[command]
    assert subparser.description and len(subparser.description) > 40, f"`attnserve {command}` has no description"
    assert "This module" not in text, "help shows an internal note"
    for action in subparser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"`attnserve {command}` option {name} has no help text"
        shows_default = action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
        if shows_default:
            assert "default" in subparser.formatter_class(command)._get_help_string(action).lower(), name
