"""``atlas``'s entry point: the one place where errors become exit codes.

A refused request (bad input, missing data, an unreachable service) prints one line
``atlas: error: ...`` and exits with its error class's ``exit_code`` (2); ``--debug`` shows the
traceback of anything unexpected; Ctrl-C exits 130, a closed pipe 141 quietly.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Sequence

from atlasstore.cli.options import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_USER_ERROR,
    _stdout_closed,
    cache_settings,
)
from atlasstore.cli.parser import build_parser
from atlasstore.errors import AtlasError

#: Optional packages and the extra that installs each (pyproject.toml's optional-dependencies):
#: a command that needs a missing one says which extra to install instead of failing inside.
EXTRA_OF = {"matplotlib": "plots", "neo4j": "neo4j", "jax": "stream", "jaxlib": "stream",
            "flax": "nvp", "optax": "nvp", "orbax": "nvp", "tensorboardX": "nvp",
            "h5py": "hdf5", "obstore": "s3", "boto3": "s3", "botocore": "s3"}


def missing_extra(exc: BaseException) -> tuple[str, str] | None:
    """(module, extra) when ``exc`` is a missing optional package, else None."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.partition(".")[0]
    return (top, EXTRA_OF[top]) if top in EXTRA_OF else None


#: errors from outside libraries that are still the user's: a bad value, a missing key or file
OUTSIDE_USER_ERRORS = (ValueError, KeyError, FileNotFoundError, PermissionError)


def exit_code_of(exc: BaseException) -> int | None:
    """The exit status of a refused request, by the error's class (:class:`AtlasError` says
    its own), or None for an unexpected error."""
    if isinstance(exc, AtlasError):
        return exc.exit_code
    if isinstance(exc, OUTSIDE_USER_ERRORS):
        return EXIT_USER_ERROR
    return None


def _quiet_abandoned_writes() -> None:
    """A run that fails with writes in flight (a storage service gone mid-request) leaves
    zarr's pending coroutines behind; at exit Python would warn about each, a number that
    depends on the moment of the failure. The error line already says what happened."""
    warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited",
                            category=RuntimeWarning)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.cache = cache_settings(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader that went away surfaces below
        return code
    except KeyboardInterrupt as exc:
        drv = sys.modules.get("atlasstore.runs.engine")  # only runs raise the detailed one
        if drv is not None and isinstance(exc, drv.RunInterrupted):
            print(f"atlas: interrupted: {exc.complete} of {exc.total} sequences of {exc.run_id} "
                  f"are complete; run the same command again to resume", file=sys.stderr)
        else:
            print("atlas: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place errors become exit codes (re-raised with --debug)
        if not args.debug:  # the one error line is all a refused request prints
            _quiet_abandoned_writes()
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            # like ls or git when `| head` has read enough: stop quietly, with the status of a
            # process killed by SIGPIPE; stdout goes to /dev/null so the flush at exit is quiet
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        if (missing := missing_extra(exc)) is not None and not args.debug:
            module, extra = missing
            print(f"atlas: error: `atlas {args.command}` needs {module}, which is not installed: "
                  f"pip install 'atlasstore[{extra}]'", file=sys.stderr)
            return EXIT_USER_ERROR
        from atlasstore.io.object_storage import explain, is_storage_error

        if is_storage_error(exc) and not args.debug:  # the service failed or refused a request
            print(f"atlas: error: {explain(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        if (status := exit_code_of(exc)) is not None and not args.debug:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"atlas: error: {msg}", file=sys.stderr)
            return status
        if args.debug:
            raise
        print(f"atlas: internal error: {type(exc).__name__}: {exc} (re-run with --debug for the "
              f"traceback)", file=sys.stderr)
        return EXIT_FAILED
