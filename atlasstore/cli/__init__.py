"""The ``atlas`` command: the only package that prints or exits."""

from atlasstore.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
