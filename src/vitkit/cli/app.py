"""The shared typer `app`, its global options (--debug, --version) and the error policy around commands.

Commands register with `@app.command()` in their own module; `VitkitGroup.invoke` wraps every one of
them in `errors.fail`, so none needs its own try/except.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from .. import __version__
from .errors import NoArgsIsHelpError, UsageError, expected, fail, usage_fail


class VitkitGroup(TyperGroup):
    """The root command group: runs a subcommand and turns its expected errors, and usage errors (an unknown
    option or command, a value of the wrong type), into one line."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except NoArgsIsHelpError:  # bare `vitkit`: the help, as asked for by no_args_is_help
            raise
        except UsageError as exc:
            usage_fail(exc)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            usage_fail(exc)
        except typer.TyperException:  # typer.Exit passes through untouched
            raise
        except BaseException as exc:
            if not expected(exc):
                raise
            fail(exc, debug=bool(ctx.params.get("debug")))


app = typer.Typer(
    name="vitkit",
    cls=VitkitGroup,
    help="Vision Transformers whose attention runs on the fastest exact kernel the machine has.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain help: rich's option panels cost `vitkit train --help` a third of a second
    pretty_exceptions_enable=False,  # a bug's traceback stays a plain Python one, without locals
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"vitkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(
        False, "--debug", help="Show full tracebacks instead of one-line errors."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Vision Transformers whose attention runs on the fastest exact kernel the machine has."""
