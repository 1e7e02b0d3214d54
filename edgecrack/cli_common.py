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
from .redact import redact

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def user_errors(fn: Callable) -> Callable:
    """Map :class:`EdgecrackError` to a red message and exit code 1, no traceback.

    Messages are printed literally (a file name like ``x[/y]z.jpg`` is not rich markup) and
    with credentials masked (a stream URL's password never reaches a console or a journal).
    """

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except EdgecrackError as e:
            # soft_wrap: a path is never broken across lines (journals and greps see it whole).
            err_console.print(f"[bold red]error:[/] {escape(redact(e.message))}", soft_wrap=True)
            if e.hint:
                err_console.print(f"[yellow]hint:[/] {escape(redact(e.hint))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper
