"""The CLI's error policy: expected failures become one `error: ...` line and exit 1, not a traceback.

Expected failures are bad input or environment (a wrong value, a missing file, a backend or optional
package this machine lacks, Ctrl-C). Anything else is a bug and keeps its traceback. `--debug` shows the
traceback always.
"""

from __future__ import annotations

import sys
import traceback
from typing import NoReturn

import typer

try:  # recent typer runs on its own vendored copy of click, whose exception classes are not click's
    from typer._click import exceptions as click_exceptions
except ImportError:
    from click import exceptions as click_exceptions

EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    OSError,  # missing files, unwritable directories, full disks
    ImportError,  # an optional package a command needs (onnx, onnxruntime) is not installed
    KeyboardInterrupt,
)
EXIT_ERROR = 1
EXIT_USAGE = 2  # click's code for a command line it cannot parse
UsageError = click_exceptions.UsageError
# A bare group invocation asking for its help (click >= 8.2 raises it; earlier versions print and exit).
NoArgsIsHelpError: type[BaseException] | tuple[()] = getattr(click_exceptions, "NoArgsIsHelpError", ())
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C


def expected(exc: BaseException) -> bool:
    """Whether `exc` is an expected failure (EXPECTED_ERRORS, or an attention backend that cannot run here) rather
    than a bug. Only vitkit.attention raises BackendUnavailableError, so its class is looked up there once it is
    loaded: importing it here would load torch for every command, `--help` included."""
    attention = sys.modules.get("vitkit.attention")
    unavailable = () if attention is None else (attention.BackendUnavailableError,)
    return isinstance(exc, (*EXPECTED_ERRORS, *unavailable))


def one_line(exc: BaseException) -> str:
    """The exception's message on a single line (the type name when it has no message)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def fail(exc: BaseException, *, debug: bool) -> NoReturn:
    """Report an expected error on stderr (one line, or the traceback under --debug) and exit non-zero."""
    if debug:
        typer.echo("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), err=True, nl=False)
    else:
        typer.echo(f"error: {one_line(exc)}", err=True)
    raise typer.Exit(EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_ERROR) from exc


def usage_fail(exc: UsageError) -> NoReturn:
    """A command line that cannot be parsed: one `error: ...` line naming where to look, exit 2."""
    where = f"{exc.ctx.command_path} --help" if exc.ctx is not None else "vitkit --help"
    text = " ".join(part.strip() for part in exc.format_message().splitlines() if part.strip())
    typer.echo(f"error: {text.rstrip('.')}; see `{where}`", err=True)
    raise typer.Exit(EXIT_USAGE) from exc
