"""MkDocs hook: the CLI reference page, written at build time from ``build_parser()``.

It walks the ``atlas`` parser's subcommands (and theirs) and puts each one's ``--help`` on
``reference/cli.md``, so the page can never disagree with the code: nothing is copied by hand.
"""

from __future__ import annotations

import argparse
from typing import Any

PAGE = "reference/cli.md"


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:  # argparse has no public walk over subcommands
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def _sections(parser: argparse.ArgumentParser, words: list[str], depth: int) -> list[str]:
    parser.prog = " ".join(words)
    out = [f"{'#' * depth} `{parser.prog}`\n", f"```text\n{parser.format_help().rstrip()}\n```\n"]
    for name, sub in _subparsers(parser):
        out += _sections(sub, [*words, name], min(depth + 1, 4))
    return out


def cli_reference() -> str:
    """The page's Markdown: every command's help, top to bottom."""
    from atlasstore.cli import build_parser

    head = ("# CLI reference\n\nGenerated at build time from `atlasstore.cli.build_parser()`: "
            "the help of `atlas` and of each of its commands.\n")
    return "\n".join([head, *_sections(build_parser(), ["atlas"], 2)])


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace the placeholder page's body with the generated reference."""
    if page.file.src_uri == PAGE:
        return cli_reference()
    return markdown
