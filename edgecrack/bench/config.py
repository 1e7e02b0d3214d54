"""What ``edgecrack bench`` measures: one typed config, validated once, written into every report.

Two presets: the default (``quick``) answers "which backend, how fast, same accuracy?" in about
two minutes on a 2-core CPU; ``full`` (``--full``) measures longer loops, batch 32 and the whole
labelled folder, for reports that are committed and compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import ConfigError
from ..runtime.registry import LOCAL, canonical_backend
from .timing import LoopBudget

#: Backend names a report can hold, in the order they are tried for each artifact family.
BACKENDS = LOCAL


@dataclass
class BenchConfig:
    """Everything ``edgecrack bench`` does; written into every report.

    Attributes:
        run: Run folder (every artifact in it) or one artifact file.
        batches: Batch sizes to measure.
        duration_s: Seconds per timed loop (used when ``iterations`` is None).
        iterations: Fixed number of timed calls per loop (overrides ``duration_s``).
        min_iterations: Calls a duration-bound loop makes at least (so a p50 is never of two samples).
        warmup: Untimed calls before each timed loop.
        threads: CPU threads for every backend (None: the cores this process may use), the
            same for onnxruntime, the bare session and PyTorch so ratios compare like with like.
        backends: Backend names to try (None: all of :data:`BACKENDS`).
        artifacts: Artifact file names to include (None: all found in the run).
        data: Labelled folder for accuracy and the real images of the end-to-end loop
            (None: the bundled SDNET2018 deck sample).
        e2e_images: How many real image files the end-to-end loop cycles through.
        accuracy: Measure accuracy on ``data``.
        accuracy_images: Labelled images scored per backend, evenly spaced over the sorted
            folder so every class is in (None: all of them).
        accuracy_budget: Largest accuracy drop (absolute) from the reference that still
            counts as "within budget" (also the accuracy tolerance of ``--compare``).
        baseline: Measure the goals' side-by-side baselines (bare onnxruntime session; eager
            PyTorch against the fastest CPU artifact).
        train_json: A training benchmark (``edgecrack.bench.train/1``) to fold into the report.
        notes: Free-text notes stored with the report (how the machine was set up, ...).
        preset: ``quick`` (the defaults) or ``full`` (see :meth:`full`); recorded in the report.
    """

    run: str
    batches: tuple[int, ...] = (1, 8)
    duration_s: float = 1.0
    iterations: int | None = None
    min_iterations: int = 5
    warmup: int = 3
    threads: int | None = None
    backends: tuple[str, ...] | None = None
    artifacts: tuple[str, ...] | None = None
    data: str | None = None
    e2e_images: int = 32
    accuracy: bool = True
    accuracy_images: int | None = 100
    accuracy_budget: float = 0.01
    baseline: bool = True
    train_json: str | None = None
    notes: tuple[str, ...] = ()
    preset: str = "quick"

    @classmethod
    def full(cls, run: str, **overrides: Any) -> "BenchConfig":
        """The long preset: batches 1, 8, 32; 3 s loops of at least 10 calls; 5 warm-up calls;
        64 end-to-end images; accuracy on the whole labelled folder."""
        base = cls(run=run, batches=(1, 8, 32), duration_s=3.0, min_iterations=10, warmup=5, e2e_images=64,
                   accuracy_images=None, preset="full")
        return replace(base, **overrides)

    @property
    def budget(self) -> LoopBudget:
        """The timed-loop budget these settings give."""
        return LoopBudget(self.warmup, self.duration_s, self.iterations, self.min_iterations)

    def validate(self) -> "BenchConfig":
        """Check values and normalise backend names.

        Raises:
            ConfigError: A value out of range or an unknown backend name.
        """
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be positive integers, got {list(self.batches)}", "e.g. --batch 1,8,32")
        self.batches = tuple(sorted({int(b) for b in self.batches}))
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"--iterations must be at least 1, got {self.iterations}")
        if self.iterations is None and not self.duration_s > 0:
            raise ConfigError(f"--duration must be positive, got {self.duration_s}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup cannot be negative, got {self.warmup}")
        if self.min_iterations < 1:
            raise ConfigError(f"min_iterations must be at least 1, got {self.min_iterations}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.e2e_images < 1:
            raise ConfigError(f"e2e images must be at least 1, got {self.e2e_images}")
        if self.accuracy_images is not None and self.accuracy_images < 2:
            raise ConfigError(f"--accuracy-images must be at least 2, got {self.accuracy_images}",
                              "or use --full for every labelled image")
        if not 0 <= self.accuracy_budget < 1:
            raise ConfigError(f"accuracy budget is an absolute accuracy drop in [0, 1), got {self.accuracy_budget}")
        if self.backends is not None:
            names = [canonical_backend(b) for b in self.backends]
            local = [n for n in names if n not in BACKENDS]
            if local:
                raise ConfigError(f"backend {local[0]!r} cannot be benchmarked by edgecrack bench",
                                  f"choose from: {', '.join(BACKENDS)}")
            self.backends = tuple(dict.fromkeys(names))
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["batches"] = list(self.batches)
        d["notes"] = list(self.notes)
        for k in ("backends", "artifacts"):
            d[k] = None if d[k] is None else list(d[k])
        return d
