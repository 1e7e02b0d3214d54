"""What every command shares: consoles, the user-error decorator, the one progress renderer, the
metrics table.

Command modules import this, never the package (``edgecrack.cli`` imports them to register their
commands), so any of them can be imported on its own.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import EdgecrackError
from ..progress import Reporter
from ..redact import redact

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


class ProgressView(Reporter):
    """The CLI's one progress renderer, for every long library call (:mod:`edgecrack.progress`).

    It is a :class:`~edgecrack.progress.Reporter` and so also a ``(phase, done, total)``
    callable: pass it as ``progress=`` to export/build-engine calls or as ``reporter=`` to train
    and bench. Each phase gets a bar (a phase of unknown length, ``total`` 0, a line); stages and
    messages are lines above the bars. Use it as a context manager: the bars stop on exit.

    Args:
        transient: Remove each bar when its phase completes (else bars stay, with elapsed time).
        unit: Show the rate (``12.3 img/s``) and the time remaining in these units.
        single: One bar for the whole job whose description follows the phase (bench: many
            short phases counted against one total), with a spinner.
        message_style: rich style of message lines (e.g. ``dim``).
    """

    def __init__(self, transient: bool = False, unit: str | None = None, single: bool = False,
                 message_style: str = ""):
        from rich.progress import (BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        cols = [SpinnerColumn()] if single else []
        cols += [TextColumn("{task.description}" if single else "  {task.description}"), BarColumn(),
                 TextColumn("{task.completed}/{task.total}")]
        cols += [TextColumn("{task.fields[rate]}"), TimeRemainingColumn()] if unit else [TimeElapsedColumn()]
        self._p = Progress(*cols, console=console, transient=transient)
        self._transient, self._unit, self._single, self._style = transient, unit, single, message_style
        self._tasks: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._start: dict[str, tuple[float, int]] = {}
        self._running = False

    def __enter__(self) -> "ProgressView":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the bars (idempotent)."""
        if self._running:
            self._p.stop()
            self._running = False

    def stage(self, name: str, detail: str = "") -> None:
        console.print(f"[bold cyan]{escape(str(name))}[/] {escape(str(detail))}")

    def message(self, text: str) -> None:
        body = escape(str(text))
        self._p.console.print(f"  [{self._style}]{body}[/]" if self._style else f"  {body}")

    def progress(self, phase: str, done: int, total: int) -> None:
        key = "job" if self._single else phase
        if total:
            self._totals[key] = total
        total = self._totals.get(key, 0)
        if key not in self._tasks:
            if not total:  # a phase of unknown length: announced as a line
                console.print(f"  {escape(str(phase))}")
                self._tasks[key] = -1
                return
            if not self._running:
                self._p.start()
                self._running = True
            self._tasks[key] = self._p.add_task(str(phase), total=total, rate="")
            self._start[key] = (time.perf_counter(), done)
        tid = self._tasks[key]
        if tid < 0:
            return
        fields = {"description": str(phase)} if self._single else {}
        if self._unit:
            t0, d0 = self._start[key]
            dt = time.perf_counter() - t0
            fields["rate"] = f"{(done - d0) / dt:.1f} {self._unit}/s" if dt > 0 and done > d0 else ""
        self._p.update(tid, completed=min(done, total), **fields)
        if self._transient and done >= total and not self._single:
            self._p.remove_task(tid)
            del self._tasks[key], self._totals[key]
            if not self._p.tasks:
                self.close()


def metrics_table(metrics: dict, title: str) -> Table:
    """Accuracy, ROC-AUC and per-class P/R/F1 of each split in ``metrics`` (train / eval)."""
    t = Table(title=escape(title), show_lines=False)
    t.add_column("split")
    t.add_column("n", justify="right")
    t.add_column("accuracy", justify="right")
    t.add_column("ROC-AUC", justify="right")
    labels = None
    for name in ("train", "validation", "test", "eval"):
        m = metrics.get(name)
        if not isinstance(m, dict):
            continue
        if labels is None:
            labels = list(m["per_class"])
            for lab in labels:
                t.add_column(f"{escape(lab)} P/R/F1", justify="right")
        auc = m.get("roc_auc")
        row = [name, str(m["n"]), f"{m['accuracy']:.3f}", "-" if auc is None else f"{auc:.3f}"]
        row += [f"{m['per_class'][lab]['precision']:.2f}/{m['per_class'][lab]['recall']:.2f}/{m['per_class'][lab]['f1']:.2f}"
                for lab in labels]
        t.add_row(*row)
    return t
