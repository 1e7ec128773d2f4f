"""The progress display of long commands: work done / total, bytes, rate and ETA on stderr (tqdm).

Engines take a plain callback, ``progress(done, total, nbytes)`` (see
:data:`bams3_spark.parallel.ProgressCallback`), and know nothing of terminals;
commands wrap their work in :func:`progress_for`::

    with progress_for(args, "genotype") as progress:
        table = genotype(datasets, sites, progress=progress)

The display is shown only when stderr is a terminal, never with ``--quiet``,
and never on stdout, so SAM/TSV/VCF on stdout stay clean. It appears only
once the work has lasted :data:`DEFAULT_DELAY` seconds (``BAMS3_PROGRESS_DELAY``
overrides it): short commands never flash a bar, and never import tqdm (about
50 ms of start-up, which a cold ``bams3 query --count`` would otherwise pay).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

#: Seconds of work before the display appears.
DEFAULT_DELAY = 0.5
#: Environment variable overriding :data:`DEFAULT_DELAY` (0 shows it at once).
DELAY_ENV = "BAMS3_PROGRESS_DELAY"
#: Size assumed for a terminal that reports none.
FALLBACK_COLUMNS, FALLBACK_ROWS = 80, 24


def _delay() -> float:
    try:
        return max(0.0, float(os.environ.get(DELAY_ENV, DEFAULT_DELAY)))
    except ValueError:
        return DEFAULT_DELAY


def _columns(stream: Any) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def _size(n: float) -> str:
    """``n`` bytes in three significant figures at most: 950 B, 12.3 MB, 412 MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 999.5:
            return f"{n:.0f} {unit}" if unit == "B" or n >= 99.95 else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class ProgressDisplay:
    """A progress bar on a terminal, fed with cumulative figures; a no-op when disabled.

    Calling it with ``(done, total, nbytes)`` (work units done so far, units
    in all, 0 when unknown, and bytes done so far) updates the bar, at most
    every 0.2 s. Use it as a context manager, or call :meth:`close`, so that
    the line is cleared before anything else is printed.

    Args:
        label: What is running (``query``, ``coverage``), the bar's prefix.
        unit: What ``done`` counts (``chunks``, ``reads``).
        enabled: False for a display that shows nothing.
        stream: Where to draw (default stderr).
        delay: Seconds before the bar appears (default: ``BAMS3_PROGRESS_DELAY`` or 0.5).
        bytes_label: Shown after the byte figures (``read``, ``written``).
        min_interval: Seconds between redraws at least.
    """

    def __init__(
        self,
        label: str,
        unit: str = "chunks",
        *,
        enabled: bool = True,
        stream: IO[str] | None = None,
        delay: float | None = None,
        bytes_label: str = "",
        min_interval: float = 0.2,
    ) -> None:
        self.label = label
        self.unit = unit
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.delay = _delay() if delay is None else delay
        self.bytes_label = bytes_label
        self.min_interval = min_interval
        self.t0 = time.monotonic()
        self._bar: Any = None
        self._closed = False

    def __call__(self, done: int, total: int, nbytes: int) -> None:
        if not self.enabled or self._closed:
            return
        elapsed = time.monotonic() - self.t0
        if self._bar is None and elapsed < self.delay:
            return
        tail = f" {self.bytes_label}" if self.bytes_label else ""
        postfix = f"{_size(nbytes)}{tail}, {_size(nbytes / max(elapsed, 1e-6))}/s"
        if self._bar is None:
            self._open(done, total, postfix)
            return
        bar = self._bar
        if total and bar.total != total:
            bar.total = total
        bar.set_postfix_str(postfix, refresh=False)
        bar.update(done - bar.n)  # redraws at most every mininterval

    def _open(self, done: int, total: int, postfix: str) -> None:
        from tqdm import tqdm  # here, not at import: see the module notes

        sized = _columns(self.stream) > 0
        counts = "{n_fmt}/{total_fmt} " if total else "{n_fmt} "
        self._bar = tqdm(
            total=total or None,
            initial=done,
            desc=self.label,
            unit=self.unit,
            # Reads read best as 1.2M/4.0M; chunks exactly.
            unit_scale=self.unit != "chunks",
            postfix=postfix,
            file=self.stream,
            leave=False,
            # Follow the terminal's width (the bar takes what the figures leave), unless it
            # reports no size: on a bare pty tqdm would hide the bar as if below the last row.
            dynamic_ncols=sized,
            ncols=None if sized else FALLBACK_COLUMNS,
            nrows=None if sized else FALLBACK_ROWS,
            mininterval=self.min_interval,
            bar_format=(
                ("{desc}: {percentage:3.0f}%|{bar}| " if total else "{desc}: ")
                + counts + self.unit + "{postfix} ["
                + ("{elapsed}<{remaining}]" if total else "{elapsed}]")
            ),
        )
        # The work started before the bar appeared: elapsed time and ETA count from then.
        self._bar.start_t = time.time() - (time.monotonic() - self.t0)
        self._bar.refresh()

    def close(self) -> None:
        """Clear the bar's line (if it was shown); later calls are ignored."""
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wants_progress(args: argparse.Namespace | None = None, *, data_on_stdout: bool = False) -> bool:
    """Whether a command should draw progress: stderr is a terminal and no ``--quiet``.

    With ``data_on_stdout`` (records printed to stdout), not when stdout is the
    same kind of terminal: the bar would tear through the records on screen.
    """
    if args is not None and getattr(args, "quiet", False):
        return False
    if not _isatty(sys.stderr):
        return False
    return not (data_on_stdout and _isatty(sys.stdout))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


@contextmanager
def progress_for(
    args: argparse.Namespace | None,
    label: str,
    unit: str = "chunks",
    *,
    data_on_stdout: bool = False,
    bytes_label: str = "",
) -> Iterator[ProgressDisplay]:
    """The one call a command makes: a display to pass to an engine as ``progress=``.

    Args:
        args: The parsed arguments (``args.quiet`` silences the display), or None.
        label: The bar's prefix (``genotype``).
        unit: What the engine's ``done`` counts.
        data_on_stdout: The command prints its data on stdout (see :func:`wants_progress`).
        bytes_label: Word after the byte figures (``read``, ``written``).

    Yields:
        A :class:`ProgressDisplay` (disabled when progress is not wanted);
        its line is cleared when the block ends, also on errors.
    """
    display = ProgressDisplay(
        label, unit, enabled=wants_progress(args, data_on_stdout=data_on_stdout), bytes_label=bytes_label
    )
    try:
        yield display
    finally:
        display.close()
