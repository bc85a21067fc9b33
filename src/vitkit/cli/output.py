"""Output helpers shared by commands: a rich console for humans, plain JSON for machines."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

ATTENTION_HELP = ("Attention kernel: auto (the fastest that can run here) or a backend `vitkit doctor` lists (math, "
                  "sdpa, flash, xformers, flex, sdpa:<kernel>). Default: auto, or the kernel an older config.json "
                  "names where it can run here.")
TRUST_PICKLE_HELP = ("Also load .pt/.pth/.bin pickles that need more than tensors; unpickling runs code from the "
                     "file, so only for files you trust.")


def console() -> Console:
    """A stdout console made per call, so it writes to whatever sys.stdout is now (tests swap it)."""
    return Console(highlight=False)


def echo_json(data: Any) -> None:
    """Print `data` as indented JSON on stdout, untouched by rich (no wrapping, no colour codes)."""
    typer.echo(json.dumps(data, indent=2))
