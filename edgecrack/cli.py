"""edgecrack command line: parse options -> one library call -> render. No logic here.

Commands live in ``cli_*.py`` modules, one per area, each with a ``register(app)``; heavy
imports (torch, TensorRT) happen inside the command bodies so ``edgecrack --help`` works with
only the core extra installed. Shared consoles and the error decorator live in
``cli_common.py``.
"""

from __future__ import annotations

import sys

import typer

from . import __version__
from .cli_common import console, err_console, user_errors  # noqa: F401 - re-exported for cli_* modules

app = typer.Typer(
    name="edgecrack",
    help="Transfer learning and edge deployment for visual inspection of concrete cracks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"edgecrack {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")) -> None:
    """edgecrack: train, export, build engines, run inspections and benchmark them."""


def _register_all() -> None:
    import importlib

    for mod in ("cli_train", "cli_cv", "cli_deploy", "cli_run", "cli_bench", "cli_report"):
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
