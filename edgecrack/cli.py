"""edgecrack command line: parse options -> one library call -> render. No logic here.

Commands live in ``cli_*.py`` modules, one per area, each with a ``register(app)``; heavy
imports (torch, TensorRT) happen inside the command bodies so ``edgecrack --help`` works with
only the core extra installed.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .errors import EdgecrackError

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="edgecrack",
    help="Transfer learning and edge deployment for visual inspection of concrete cracks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


def _version(value: bool) -> None:
    if value:
        console.print(f"edgecrack {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")) -> None:
    """edgecrack: train, export, build engines, run inspections and benchmark them."""


def _register_all() -> None:
    import importlib

    for mod in ("cli_train", "cli_deploy", "cli_run", "cli_bench"):
        try:
            m = importlib.import_module(f"edgecrack.{mod}")
        except ModuleNotFoundError as e:
            if e.name == f"edgecrack.{mod}":
                continue  # that area is not part of this build
            raise
        m.register(app)


_register_all()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
