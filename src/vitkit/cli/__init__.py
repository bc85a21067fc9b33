"""The `vitkit` command line: a thin typer + rich layer over the library.

Each command lives in its own module under `vitkit.cli`, registering itself on the shared `app`
(see `vitkit.cli.app`); importing it below is all it takes to add one. The library (`import vitkit`)
never imports this package, so typer and rich stay CLI-only dependencies.

A command module imports only typer, rich and the standard library at its top; the library (torch, torchvision,
matplotlib, scikit-learn) is imported inside each command's function, when it runs. Typer needs no more than the
signatures to build the app, so `vitkit --help`, `vitkit CMD --help` and a mistyped option stay fast
(tests/test_cli.py checks that nothing heavy is imported for them).
"""

from __future__ import annotations

# imported for their @app.command registrations
from . import attention_map, bench, convert, doctor, embed, evaluate, export, models, train  # noqa: F401
from .app import app


def main() -> None:
    """Console-script entry point (`vitkit`, `python -m vitkit`)."""
    app(prog_name="vitkit")


__all__ = ["app", "main"]
