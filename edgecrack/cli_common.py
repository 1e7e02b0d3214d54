"""Shared pieces of the command line: consoles and the user-error decorator.

Kept apart from ``cli.py`` so that any ``cli_*`` module can be imported on its own (``cli.py``
imports the ``cli_*`` modules to register their commands).
"""

from __future__ import annotations

import functools
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from .errors import EdgecrackError

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def user_errors(fn: Callable) -> Callable:
    """Map :class:`EdgecrackError` to a red message and exit code 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except EdgecrackError as e:
            err_console.print(f"[bold red]error:[/] {escape(e.message)}")
            if e.hint:
                err_console.print(f"[yellow]hint:[/] {escape(e.hint)}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper
