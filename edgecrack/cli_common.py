"""Shared pieces of the command line: consoles and the user-error decorator.

Kept apart from ``cli.py`` so that any ``cli_*`` module can be imported on its own (``cli.py``
imports the ``cli_*`` modules to register their commands).
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from .errors import EdgecrackError
from .redact import redact

#: Width of a console that is not a terminal (a pipe, a file, a journal) when COLUMNS is not set:
#: wide enough that rich never hard-wraps a line; tables still size to their content.
PIPE_WIDTH = 10_000


def make_console(stderr: bool = False) -> Console:
    """The one way the CLI makes a rich console.

    On a terminal: rich's defaults (its width, wrapping). Anywhere else (output piped to a file,
    ``grep``, a systemd journal) rich would hard-wrap at 80 columns and split a path or a
    ``done in 52.9s ... skipped 0 files`` summary over two lines; there the console soft-wraps
    (no line breaks added) and is :data:`PIPE_WIDTH` wide unless ``COLUMNS`` says otherwise.
    """
    c = Console(stderr=stderr, highlight=False)
    if c.is_terminal:
        return c
    width = None if os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


console = make_console()
err_console = make_console(stderr=True)


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
