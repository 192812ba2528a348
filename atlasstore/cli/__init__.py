"""The ``atlas`` command: the only package that prints or exits.

:mod:`.entry` (the entry point, errors to exit codes), :mod:`.parser` (every command and option),
:mod:`.options` (what commands share), and one module per command group: :mod:`.write`
(init, generate, import), :mod:`.inspect` (ls, query, show, stats), :mod:`.catalog` (audit,
catalog sync and lineage) and :mod:`.train` (train, evaluate).
"""

from atlasstore.cli.entry import main
from atlasstore.cli.parser import build_parser

__all__ = ["build_parser", "main"]
