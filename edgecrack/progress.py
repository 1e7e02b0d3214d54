"""The one progress protocol of edgecrack's long library calls (train, bench, export, build-engine).

A long call reports ``(phase, done, total)``: ``done`` of ``total`` steps of ``phase`` are finished;
``total`` 0 announces a phase of unknown length. A plain function of that shape
(:data:`Progress`) is enough for most calls; jobs with more to say take a :class:`Reporter`,
which also has stages and messages and is itself such a function. The library never prints:
the CLI renders both with one helper (:class:`edgecrack.cli.common.ProgressView`), and the
default reporter is silent.
"""

from __future__ import annotations

from typing import Callable

#: ``(phase, done, total)``; ``total`` 0: the phase's length is unknown.
Progress = Callable[[str, int, int], None]


class Reporter:
    """Progress of a long job; every hook does nothing unless overridden (silent by default)."""

    def stage(self, name: str, detail: str = "") -> None:
        """A step of the job begins (``detail`` says what it works on)."""

    def progress(self, phase: str, done: int, total: int) -> None:
        """``done`` of ``total`` steps of ``phase`` are finished (``total`` 0: unknown)."""

    def message(self, text: str) -> None:
        """A line worth showing: a result, a skipped case, a note."""

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.progress(phase, done, total)
