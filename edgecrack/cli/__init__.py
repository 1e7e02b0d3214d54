"""edgecrack command line: parse options -> one library call -> render. No logic here.

One module per command (``train.py`` for ``edgecrack train`` ...), each a thin layer over one
library call with a ``register(app)``; what they share (consoles, the error decorator, the one
progress renderer) is in ``common.py``. Heavy imports (torch, TensorRT) happen inside the
command bodies, so ``edgecrack --help`` works with only the core extra installed.
"""

from __future__ import annotations

import importlib

import typer

from .. import __version__
from .common import console

app = typer.Typer(
    name="edgecrack",
    help="Transfer learning and edge deployment for visual inspection of concrete cracks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Command modules, in the order ``edgecrack --help`` lists their commands.
COMMANDS = ("train", "eval", "predict", "cv", "export", "build_engine", "doctor", "calibration", "run", "bench",
            "report")


def _version(value: bool) -> None:
    if value:
        console.print(f"edgecrack {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")) -> None:
    """edgecrack: train, export, build engines, run inspections and benchmark them."""


def _register_all() -> None:
    for name in COMMANDS:
        mod = f"{__name__}.{name}"
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue  # that command is not part of this build
            raise
        m.register(app)


_register_all()
